"""Where shards are decoded: in this process (``local``) or by Ray (``ray``).

Both engines hand each finished shard to ``on_result(index, result)`` in the driver, which alone
writes the output folder, so the records are the same whichever engine ran them.

``ray``: without ``address`` a Ray instance is started on this machine for the run (no dashboard,
a small object store) and stopped at the end; with ``address`` (``auto``, ``HOST:PORT`` or
``ray://HOST:PORT``) the run joins a running cluster, whose nodes must see the audio, the model
and the same whisper-ft at the same paths. A Ray Data pipeline in two stages:

1. Ray tasks read each shard's audio (:func:`whisper_ft.scale.worker.load_shard`: ffmpeg,
   resampling) into the object store, a few shards ahead, never many (small shards, bounded
   concurrency, Ray Data's backpressure): a model worker never waits on audio decoding;
2. a pool of ``workers`` actors, each with the model opened once (and its CPUs or GPU), decodes
   one loaded shard at a time; results stream back to the driver as shards finish.

An actor or task that dies (a node lost, a process killed) is restarted and its shard done again
(Ray Data's retries); the driver takes each shard's result once. A shard that fails for good is
reported (its inputs go to errors.jsonl) and the others carry on.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.scale.plan import Item
from whisper_ft.scale.worker import SHIP_SECONDS, DecodeSettings, ShardWorker, load_shard

ENGINES = ("local", "ray")
RAY_MISSING = "--engine ray needs Ray: pip install 'whisper-ft[scale]' (or pip install 'ray[data]')"
OBJECT_STORE_BYTES = 512 * 1024**2  # a local Ray's shared memory: a few loaded shards (<= 38 MB of samples each)
LOAD_CPUS = 1  # each audio-loading task's share of a node

OnResult = Callable[[int, dict], None]


@dataclass
class EngineRun:
    """What an engine did, for the summary."""

    engine: str
    workers: int
    cpus_per_worker: int | None = None
    gpus_per_worker: float = 0.0
    startup_seconds: float = 0.0  # engine start to a worker ready (ray: first result less its decode time)
    ray_init_seconds: float | None = None
    lost_shards: list[int] = field(default_factory=list)


def concrete_compute_type(compute_type: str, on_gpu: bool) -> str:
    """``auto`` made one value for every worker: CTranslate2's defaults (CUDA float16, CPU int8).
    Decided once by the driver, not by each worker (a per-process choice, e.g. one calibrated per
    thread count, could make two workers of one run decode differently)."""
    ct = (compute_type or "auto").strip().lower()
    return ("float16" if on_gpu else "int8") if ct == "auto" else ct


def run_local(settings: DecodeSettings, shards: list[tuple[int, list[Item]]], on_result: OnResult) -> EngineRun:
    from whisper_ft.decoding.ct2_loading import default_cpu_threads, resolve_device

    device, _ = resolve_device(settings.device, "auto")
    settings = replace(settings, device=device, compute_type=concrete_compute_type(settings.compute_type, device == "cuda"))
    t0 = time.perf_counter()
    worker = ShardWorker(settings)
    run = EngineRun("local", 1, settings.cpu_threads or default_cpu_threads(), startup_seconds=time.perf_counter() - t0)
    for index, items in shards:
        on_result(index, worker(items))  # the worker reads each file as it goes: one file's samples in memory
    return run


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def start_ray(address: str | None) -> tuple[bool, float]:
    """Start a local Ray (``address`` None) or join a cluster; returns (started here, seconds).

    A local Ray gets one logical CPU more than the machine has cores, for the audio-loading tasks
    (on one machine they share the cores with the decoders). Ray's driver replaces the SIGTERM
    handler with a plain exit: whisper-ft's (SIGTERM stops a command like Ctrl-C) is put back."""
    import logging

    try:
        import ray
    except ImportError as exc:
        raise WhisperFtError(RAY_MISSING) from exc
    previous = signal.getsignal(signal.SIGTERM)
    t0 = time.perf_counter()
    # Ray's warnings (token authentication, deprecations) are for developers: shown with --debug
    level = logging.INFO if os.environ.get("WHISPER_FT_DEBUG") else logging.ERROR
    quiet = dict(log_to_driver=False, logging_level=level, configure_logging=True)
    try:
        if address is None:
            ray.init(num_cpus=_cpu_count() + LOAD_CPUS, include_dashboard=False,
                     object_store_memory=OBJECT_STORE_BYTES, **quiet)
        else:
            ray.init(address=address, **quiet)
    except ConnectionError as exc:
        raise WhisperFtError(f"cannot join the Ray cluster at {address}: {exc}; start it (`ray start --head`) "
                             "or leave out --ray_address to run on this machine") from exc
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    import ray.data  # noqa: F401  (it sets up its own loggers on import: quieted after)

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    return address is None, time.perf_counter() - t0


def ray_layout(workers: int | None, cpus_per_worker: int | None, gpus_per_worker: float | None,
               device: str, cpus: int, gpus: int) -> tuple[int, int, float]:
    """(workers, CPUs each, GPUs each) on a cluster of ``cpus`` CPUs and ``gpus`` GPUs: by default
    one worker per GPU (CUDA), else one per 2 CPUs; the CPUs are shared out among the workers (at
    most 4 each), one CPU left for the audio-loading tasks."""
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus and device in ("auto", "cuda") else 0.0
    if device == "cuda" and not gpus_per_worker:
        raise WhisperFtError("--device cuda with --gpus_per_worker 0: give each worker a GPU")
    if gpus_per_worker and not gpus:
        raise WhisperFtError(f"the Ray cluster has no GPU for --gpus_per_worker {gpus_per_worker:g}: "
                             "use --device cpu (or add GPU nodes)")
    free = max(1, cpus - LOAD_CPUS)
    if workers is None:
        workers = max(1, int(gpus / gpus_per_worker)) if gpus_per_worker else max(1, free // 2)
    if cpus_per_worker is None:
        cpus_per_worker = max(1, min(4, free // workers))
    if cpus_per_worker * workers + LOAD_CPUS > cpus or (gpus_per_worker and gpus_per_worker * workers > gpus + 1e-9):
        gpu = f" and {gpus_per_worker:g} GPU" if gpus_per_worker else ""
        raise WhisperFtError(
            f"{workers} workers of {cpus_per_worker} CPU(s){gpu}, and {LOAD_CPUS} CPU for reading audio, do not fit "
            f"the Ray cluster ({cpus} CPUs, {gpus} GPUs): lower --workers or --cpus_per_worker")
    return workers, cpus_per_worker, gpus_per_worker


def _loader(settings: DecodeSettings):
    """A Ray Data row function: a shard's items -> the same row with its audio read."""
    def load(row: dict) -> dict:
        items = [Item.from_dict(d) for d in json.loads(row["items"])]
        return {"shard": row["shard"], "items": row["items"], **load_shard(items, settings, ship_seconds=SHIP_SECONDS)}

    return load


def _actor_class(settings: DecodeSettings):
    """A Ray Data callable class closed over ``settings`` (no constructor arguments to keep)."""
    import numpy as np

    class TranscribeShards:
        def __init__(self):
            self.worker = ShardWorker(settings)

        def __call__(self, batch: dict) -> dict:
            out = []
            for items, entries, audio in zip(batch["items"], batch["entries"], batch["audio"]):
                result = self.worker([Item.from_dict(d) for d in json.loads(items)],
                                     {"entries": entries, "audio": audio})
                out.append(json.dumps(result, ensure_ascii=False))
            return {"shard": batch["shard"], "result": np.array(out, dtype=object)}

    return TranscribeShards


def run_ray(settings: DecodeSettings, shards: list[tuple[int, list[Item]]], on_result: OnResult, *,
            address: str | None = None, workers: int | None = None, cpus_per_worker: int | None = None,
            gpus_per_worker: float | None = None) -> EngineRun:
    import ray

    t0 = time.perf_counter()
    started, init_seconds = start_ray(address)
    try:
        import ray.data

        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        workers, per_cpu, per_gpu = ray_layout(workers, cpus_per_worker, gpus_per_worker, settings.device, cpus, gpus)
        settings = replace(settings, cpu_threads=per_cpu, device="cuda" if per_gpu else "cpu",
                           compute_type=concrete_compute_type(settings.compute_type, bool(per_gpu)))
        run = EngineRun("ray", workers, per_cpu, per_gpu, ray_init_seconds=init_seconds)
        log(f"ray: {'a local Ray' if started else f'the cluster at {address}'} ({cpus} CPUs, {gpus} GPUs), "
            f"{workers} worker(s) of {per_cpu} CPU(s){f' and {per_gpu:g} GPU' if per_gpu else ''}, "
            f"started in {init_seconds:.1f} s")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.max_errored_blocks = -1  # a shard that fails for good is reported; the others carry on
        rows = [{"shard": i, "items": json.dumps([it.to_dict() for it in items], ensure_ascii=False)}
                for i, items in shards]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        loaders = max(1, min(workers + 1, cpus - workers * per_cpu))  # a few shards read ahead, never the corpus
        ds = ds.map(_loader(settings), num_cpus=LOAD_CPUS, concurrency=loaders)
        pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1)  # no queue behind a busy one
        ds = ds.map_batches(_actor_class(settings), batch_size=1, batch_format="numpy", compute=pool,
                            num_cpus=per_cpu, num_gpus=per_gpu or None)
        seen: set[int] = set()
        # prefetch_batches=0: each result as soon as its shard is done (iter_rows holds one back
        # until the next is done: a late progress line, and a finished shard lost to a Ctrl-C)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for shard, text in zip(batch["shard"], batch["result"]):
                index = int(shard)
                if index in seen:  # a shard done twice (a retry whose first result also came back): once
                    continue
                result = json.loads(text)
                if not seen:
                    run.startup_seconds = time.perf_counter() - t0 - result["decode_seconds"]
                seen.add(index)
                on_result(index, result)
        run.lost_shards = sorted({i for i, _ in shards} - seen)
        return run
    finally:
        ray.shutdown()
        if started:
            _wait_for_local_ray_exit()


def _wait_for_local_ray_exit(timeout: float = 10.0) -> None:
    """ray.shutdown() returns before the local Ray's processes are gone: wait (briefly) for them,
    so the command leaves nothing running when it returns."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with Ray
        return
    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while time.monotonic() < deadline:
        alive = 0
        for child in me.children(recursive=True):
            try:
                alive += child.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                continue
        if not alive:
            return
        time.sleep(0.1)

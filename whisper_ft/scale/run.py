"""``whisper-ft transcribe``'s library entry point, :func:`transcribe_corpus`: plan, decode what
is not recorded yet, then the training manifest and the summary.

See :mod:`whisper_ft.scale` for the pieces. A file that fails is a line in errors.jsonl and the
run carries on; the next run into the same folder tries it again (its error may have been
fixed: a file copied completely, a codec installed), and skips every input already recorded. An
interrupted run (Ctrl-C, SIGTERM) keeps every finished shard and writes no summary.
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.core.console import log, warn
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.scale.engines import ENGINES, RAY_MISSING, EngineRun, run_local, run_ray
from whisper_ft.scale.labels import DEFAULT_AGREEMENT_WER, Filters, LabelCounts, write_training_manifest
from whisper_ft.scale.output import ERRORS, OutputFolder
from whisper_ft.scale.plan import Item, collect_items, fill_planned, identify, make_shards, same_version
from whisper_ft.scale.worker import DecodeSettings


@dataclass
class CorpusRun:
    """What :func:`transcribe_corpus` did (``summary`` is what ``summary.json`` holds)."""

    output_dir: Path
    summary: dict
    engine: EngineRun
    labels: LabelCounts | None = None
    first_errors: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        s, r = self.summary, self.summary["this_run"]
        lines = [f"recorded: {s['files']} files, {s['audio_hours']:.3f} h of audio in {self.output_dir}",
                 f"this run: {r['files']} files decoded ({s['inputs']['recorded_before']} of the inputs recorded "
                 f"before), {r['failed']} failed, {r['audio_hours']:.3f} h of audio in {r['wall_seconds']:.1f} s"
                 + (f" = {r['audio_hours_per_hour']:.1f} h of audio per hour ({r['engine']}, {r['workers']} worker(s); "
                    f"start-up {r['startup_seconds']:.1f} s)" if r["files"] else "")]
        failures = s["failures"]
        if failures["files"]:
            by = ", ".join(f"{k} {v}" for k, v in failures["by_reason"].items())
            lines.append(f"errors: {failures['files']} inputs without a record ({by}) in {self.output_dir / ERRORS}")
        if self.labels is not None:
            t = s["train_manifest"]
            dropped = ", ".join(f"{k} {v}" for k, v in t["dropped"].items() if v) or "none"
            lines.append(f"training manifest {t['path']}: {t['kept']} of {t['slices']} slices kept "
                         f"({t['kept_hours']:.3f} h); dropped: {dropped}")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise when the run did not do its job: shards lost for good, or every input failing."""
        r = self.summary["this_run"]
        for e in self.first_errors:
            log(f"failed: {e['audio']['path']}: {e['message']}")
        if r["lost_shards"]:
            raise WhisperFtError(f"{len(r['lost_shards'])} shard(s) could not be decoded (their workers kept dying); "
                                 "run the same command again to retry them")
        failed = self.summary["failures"]["files"]
        if failed and not self.summary["files"]:
            raise WhisperFtError(f"no input could be transcribed ({failed} failed, listed in "
                                 f"{self.output_dir / ERRORS})")
        if failed:
            warn(f"{failed} inputs have no record (see {self.output_dir / ERRORS}); "
                 "running the same command again retries them")


class _Progress:
    """One line on stderr per finished shard: files, hours of audio, hours per hour, ETA."""

    def __init__(self, shards: list[tuple[int, list[Item]]]):
        items = [it for _, s in shards for it in s]
        known = [it.planned for it in items if it.planned is not None]
        mean = sum(known) / len(known) if known else 0.0
        self.total_files, self.total_seconds = len(items), sum(it.planned or mean for it in items)
        self.mean = mean
        self.files = self.failed = 0
        self.audio_seconds = self.planned_done = 0.0
        self.t0 = time.perf_counter()

    def shard(self, items: list[Item], result: dict) -> None:
        self.files += len(items)
        self.failed += len(result["errors"])
        self.audio_seconds += result["audio_seconds"]
        self.planned_done += sum(it.planned or self.mean for it in items)
        wall = max(1e-9, time.perf_counter() - self.t0)
        rate = self.audio_seconds / wall  # hours of audio per hour
        left = max(0.0, self.total_seconds - self.planned_done)
        eta = _duration(left / rate) if rate > 0 else "?"
        log(f"{self.files}/{self.total_files} files ({self.failed} failed), {_duration(self.audio_seconds)} of audio, "
            f"{rate:.1f} h/h, ETA {eta} [{result['worker']}]")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def transcribe_corpus(
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    model: str = "base",
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int | None = None,
    gpus_per_worker: float | None = None,
    shard_files: int = 64,
    shard_minutes: float = 10.0,
    verify_inputs: bool = False,
    train_manifest: str | Path | None = None,
    filters: Filters | None = None,
    agreement_model: str | None = None,
    formats: tuple[str, ...] | list[str] = (),
    **decode,
) -> CorpusRun:
    """Transcribe ``inputs`` into ``output_dir`` (see :mod:`whisper_ft.scale.output`). ``decode``
    are :class:`~whisper_ft.scale.worker.DecodeSettings` fields (device, compute_type, beam_size,
    language, task, batch_size, long_batch_size, pack, max_audio_seconds). With ``train_manifest``
    the records that pass ``filters`` are written there as a training manifest."""
    from whisper_ft.core.languages import normalize_language
    from whisper_ft.core.writers import validate_format
    from whisper_ft.decoding.ct2_loading import ensure_ct2_folder, resolve_device
    from whisper_ft.decoding.options import DecodingOptions

    engine = (engine or "").strip().lower()
    if engine not in ENGINES:
        raise WhisperFtError(f"unknown --engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "local" and (workers not in (None, 1) or ray_address or gpus_per_worker):
        raise WhisperFtError("--workers, --ray_address and --gpus_per_worker need --engine ray (local is this process)")
    if engine == "ray" and importlib.util.find_spec("ray") is None:  # said before any folder is made
        raise WhisperFtError(RAY_MISSING)
    formats = tuple(dict.fromkeys(validate_format(f.strip()) for spec in formats for f in spec.split(",") if f.strip()))
    decode["language"] = normalize_language(decode.get("language"))
    DecodingOptions(language=decode["language"], task=decode.get("task", "transcribe"),  # checks them, names the choices
                    beam_size=decode.get("beam_size", 5), batch_size=decode.get("batch_size", 16))
    if engine == "local":  # a cluster's devices are its own business (checked where the workers run)
        resolve_device(decode.get("device", "auto"), decode.get("compute_type", "auto"))
    filters = filters or Filters()
    if filters.max_agreement_wer is not None and not agreement_model:
        raise WhisperFtError("--max_agreement_wer needs --agreement_model (the second model to agree with)")
    if agreement_model and filters.max_agreement_wer is None:
        filters = Filters(**{**filters.to_dict(), "max_agreement_wer": DEFAULT_AGREEMENT_WER})
    items, missing = collect_items(inputs)
    if not items:
        first = f": {missing[0].path}: {missing[0].message}" if missing else ""
        raise WhisperFtError(f"no audio to transcribe{first}; give audio files, folders, globs, manifests or lists")
    settings = DecodeSettings(
        model=str(ensure_ct2_folder(model).resolve()), model_name=str(model), formats=formats,
        cpu_threads=cpus_per_worker, agreement_model=str(ensure_ct2_folder(agreement_model).resolve()) if agreement_model else None,
        agreement_name=str(agreement_model) if agreement_model else None, **decode)

    out = OutputFolder(output_dir)
    out.open(settings.text_defining())
    try:
        return _run(out, settings, items, missing, engine=engine, ray_address=ray_address, workers=workers,
                    cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, shard_files=shard_files,
                    shard_minutes=shard_minutes, verify_inputs=verify_inputs, train_manifest=train_manifest,
                    filters=filters)
    finally:
        out.close()


def _run(out: OutputFolder, settings: DecodeSettings, items: list[Item], missing, *, engine, ray_address, workers,
         cpus_per_worker, gpus_per_worker, shard_files, shard_minutes, verify_inputs, train_manifest,
         filters) -> CorpusRun:
    missing += identify(items, verify=verify_inputs)
    done = set()
    for it in items:
        r = out.recorded.get(it.where)
        if r is not None and same_version(r.audio, it):
            done.add(it.where)
            it.planned = r.planned if r.planned is not None else it.planned  # the plan the first run made
    fill_planned(items)
    shards = make_shards(items, shard_files=shard_files, shard_minutes=shard_minutes)
    pending = [(i, todo) for i, s in enumerate(shards) if (todo := [it for it in s if it.where not in done])]
    out.add_errors([{"audio": {"path": m.path}, "reason": m.reason, "message": m.message} for m in missing])
    out.write_errors()
    n_pending = sum(len(s) for _, s in pending)
    log(f"{len(items)} input files ({sum(it.planned or 0 for it in items) / 3600:.2f} h known from headers or "
        f"manifests): {len(done)} recorded before, {n_pending} to transcribe in {len(pending)} shards"
        + (f"; {len(missing)} missing" if missing else ""))

    progress = _Progress(pending)
    by_index = dict(pending)
    this = Counter()

    def on_result(index: int, result: dict) -> None:
        planned = {it.where: it.planned for it in by_index[index]}
        out.commit(result["records"], result["errors"], planned)
        this["files"] += len(result["records"])
        this["failed"] += len(result["errors"])
        this["audio_seconds"] += result["audio_seconds"]
        progress.shard(by_index[index], result)

    t0 = time.perf_counter()
    if not pending:
        ran = EngineRun(engine, 0)
    elif engine == "local":
        ran = run_local(settings, pending, on_result)
    else:
        ran = run_ray(settings, pending, on_result, address=ray_address, workers=workers,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    wall = time.perf_counter() - t0
    if ran.lost_shards:
        out.add_errors([{"audio": it.identity(), "id": it.key, "reason": "worker_failed",
                         "message": "its shard's workers kept dying (Ray gave up on it); run again to retry"}
                        for i in ran.lost_shards for it in by_index[i]])
        out.write_errors()
    labels = None
    if train_manifest is not None:
        labels = write_training_manifest(out.latest_records(), train_manifest, filters)
    summary = _summary(out, settings, items, missing, done, ran, this, wall, labels, train_manifest)
    out.write_summary(summary)
    first = [e for e in out.errors.values()][:10]
    return CorpusRun(out.root, summary, ran, labels, first)


def _summary(out: OutputFolder, settings, items, missing, done, ran: EngineRun, this: Counter, wall: float,
             labels: LabelCounts | None, train_manifest) -> dict:
    reasons = Counter(e["reason"] for e in out.errors.values())
    summary = {
        "tool": "whisper-ft transcribe", **settings.text_defining(),
        "files": len(out.recorded), "audio_hours": round(sum(r.duration for r in out.recorded.values()) / 3600, 6),
        "parts": len(out.parts()),
        "failures": {"files": len(out.errors), "by_reason": dict(sorted(reasons.items()))},
        "inputs": {"files": len(items) + len(missing), "recorded_before": len(done)},
        "this_run": {
            "engine": ran.engine, "workers": ran.workers, "cpus_per_worker": ran.cpus_per_worker,
            "gpus_per_worker": ran.gpus_per_worker, "files": this["files"], "failed": this["failed"] + len(missing),
            "audio_hours": round(this["audio_seconds"] / 3600, 6), "wall_seconds": round(wall, 2),
            "audio_hours_per_hour": round(this["audio_seconds"] / wall, 2) if wall and this["files"] else 0.0,
            "startup_seconds": round(ran.startup_seconds, 2),
            "ray_init_seconds": None if ran.ray_init_seconds is None else round(ran.ray_init_seconds, 2),
            "lost_shards": ran.lost_shards,
        },
    }
    if labels is not None:
        summary["train_manifest"] = {"path": str(Path(train_manifest).resolve()), **labels.to_dict()}
    return summary

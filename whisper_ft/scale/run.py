"""``whisper-ft transcribe``'s library entry point: plan, decode the shards not done yet, merge.

See :mod:`whisper_ft.scale` for the pieces. The run carries on past files that fail; the caller
reports them (:meth:`ScaleResult.raise_for_failures`). An interrupted run (Ctrl-C, SIGTERM) keeps
every finished shard: the same command resumes it.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.scale.engines import ENGINES, EngineRun, run_local, run_ray
from whisper_ft.scale.output import OutputFolder
from whisper_ft.scale.plan import Missing, collect_items, fill_durations, fingerprint, make_shards
from whisper_ft.scale.worker import DecodeSettings

SHOWN_FAILURES = 20  # failures listed on stderr; all of them are in OUT/failures/


@dataclass
class ScaleResult:
    output_dir: Path
    summary: dict
    failures: list[dict] = field(default_factory=list)  # the first SHOWN_FAILURES
    missing: list[Missing] = field(default_factory=list)

    def describe(self) -> str:
        s, r = self.summary, self.summary["this_run"]
        lines = [
            f"files: {s['files']} in {s['shards']} shards; transcribed {s['transcribed_files']}, failed "
            f"{s['failed_files']}; {s['audio_hours']:.3f} h of audio",
            f"training records: {s['records']} ({s['record_hours']:.3f} h) in {self.output_dir / 'train.jsonl'}; "
            f"rejected {s['rejected']} (see rejected/)",
        ]
        if r["shards"]:
            lines.append(f"this run: {r['shards']} shards, {r['audio_hours']:.3f} h in {r['wall_seconds']:.1f} s "
                         f"= {r['audio_hours_per_hour']:.1f} h of audio per hour ({r['engine']}, {r['workers']} "
                         f"worker(s); start-up {r['startup_seconds']:.1f} s)")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        failed = self.summary["failed_files"] + len(self.missing)
        lost = self.summary["this_run"]["lost_shards"]
        for m in self.missing:
            log(f"failed: {m.path}: {m.message}")
        for f in self.failures:
            log(f"failed: {f['audio']}: {f['error']}")
        if self.summary["failed_files"] > len(self.failures):
            log(f"... {self.summary['failed_files'] - len(self.failures)} more in {self.output_dir / 'failures'}/")
        if lost:
            raise WhisperFtError(f"{len(lost)} shard(s) could not be decoded (their workers kept dying: first "
                                 f"shard {lost[0]}); run the same command again to retry them")
        if failed:
            raise WhisperFtError(f"{failed} of {self.summary['files'] + len(self.missing)} inputs failed (listed "
                                 "above); the others were transcribed")


def transcribe_at_scale(
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    model: str,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int | None = None,
    gpus_per_worker: float | None = None,
    shard_files: int = 64,
    shard_minutes: float = 30.0,
    **decode,
) -> ScaleResult:
    """Transcribe ``inputs`` into ``output_dir`` (see :mod:`whisper_ft.scale.output`); ``decode``
    are :class:`~whisper_ft.scale.worker.DecodeSettings` fields (all but ``model``)."""
    from whisper_ft.core.writers import validate_format
    from whisper_ft.decoding.ct2_loading import ensure_ct2_folder

    if engine not in ENGINES:
        raise WhisperFtError(f"unknown --engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "local" and (workers not in (None, 1) or address or gpus_per_worker):
        raise WhisperFtError("--workers, --address and --gpus_per_worker need --engine ray (local is one worker)")
    if engine == "ray" and importlib.util.find_spec("ray") is None:  # said before any folder is made
        raise WhisperFtError("--engine ray needs Ray: pip install 'whisper-ft[scale]' (or pip install 'ray[data]')")
    decode["formats"] = tuple(dict.fromkeys(validate_format(f) for f in decode.get("formats") or ()))
    items, missing = collect_items(inputs)
    if not items:
        first = f": {missing[0].path}: {missing[0].message}" if missing else ""
        raise WhisperFtError(f"no audio to transcribe{first}; give audio files, folders, globs or manifests")
    fill_durations(items)
    shards = make_shards(items, shard_files=shard_files, shard_minutes=shard_minutes)
    settings = DecodeSettings(model=str(ensure_ct2_folder(model).resolve()), **decode)
    out = OutputFolder(output_dir, len(shards))
    description = {"tool": "whisper-ft transcribe", "settings": settings.output_defining(),
                   "plan": fingerprint(shards), "files": len(items), "shards": len(shards)}
    done = out.open(description)
    pending = [(i, s) for i, s in enumerate(shards) if i not in done]
    known = sum(it.duration or 0 for it in items) / 3600
    log(f"{len(items)} files ({known:.2f} h known from headers/manifests) in {len(shards)} shards; "
        f"{len(done)} done before, {len(pending)} to do")

    this = {"shards": 0, "audio_seconds": 0.0}
    t0 = time.perf_counter()

    def on_result(index: int, result: dict) -> None:  # one line per shard: a batch job's log, not a bar
        stats = out.write_shard(index, result)
        this["shards"] += 1
        this["audio_seconds"] += stats["audio_seconds"]
        rate = this["audio_seconds"] / max(1e-9, time.perf_counter() - t0)
        log(f"shard {index} done ({this['shards']}/{len(pending)}): {len(shards[index])} files, "
            f"{stats['audio_seconds'] / 60:.1f} min of audio, {stats['records']} records, {stats['failed']} failed "
            f"[{stats['worker']}]; {rate:.1f} h of audio per hour so far")

    if not pending:
        ran = EngineRun(engine, 0)
    elif engine == "local":
        ran = run_local(settings, pending, on_result)
    else:
        ran = run_ray(settings, pending, on_result, address=address, workers=workers,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    wall = time.perf_counter() - t0
    summary = _summary(out, shards, ran, this, wall)
    out.merge()
    out.write_summary(summary)
    return ScaleResult(out.root, summary, out.failures(SHOWN_FAILURES), missing)


def _summary(out: OutputFolder, shards, ran: EngineRun, this: dict, wall: float) -> dict:
    stats = out.shard_stats()
    done = out.done_shards()
    record_seconds = sum(s["record_seconds"] for s in stats)
    audio = sum(s["audio_seconds"] for s in stats)
    failed = sum(s["failed"] for s in stats)
    files_done = sum(len(shards[i]) for i in done if i < len(shards))
    return {
        "files": sum(len(s) for s in shards), "shards": len(shards), "shards_done": len(done),
        "transcribed_files": files_done - failed, "failed_files": failed,
        "records": sum(s["records"] for s in stats), "record_hours": round(record_seconds / 3600, 6),
        "rejected": sum(s["rejected"] for s in stats), "audio_hours": round(audio / 3600, 6),
        "this_run": {
            "engine": ran.engine, "workers": ran.workers, "cpus_per_worker": ran.cpus_per_worker,
            "gpus_per_worker": ran.gpus_per_worker, "shards": this["shards"],
            "audio_hours": round(this["audio_seconds"] / 3600, 6), "wall_seconds": round(wall, 2),
            "audio_hours_per_hour": round(this["audio_seconds"] / wall, 2) if wall else 0.0,
            "startup_seconds": round(ran.startup_seconds, 2), "ray_init_seconds": None if ran.ray_init_seconds is None else round(ran.ray_init_seconds, 2),
            "lost_shards": ran.lost_shards,
        },
    }

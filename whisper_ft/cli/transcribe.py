"""`whisper-ft transcribe`: many hours of audio -> a training manifest, here or on a Ray cluster.

Only option parsing here; the work is in whisper_ft.scale (imported inside the command).
"""

from __future__ import annotations

from pathlib import Path

import typer

from whisper_ft.cli import app


@app.command("transcribe")
def transcribe_command(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders, quoted globs ('data/**/*.flac'), manifests (.jsonl) or lists of paths (.txt)."),
    output_dir: Path = typer.Option(..., "--output_dir", help="New or empty folder, or one this command started with the same settings (resumes it)."),
    model_path: str = typer.Option("base", "--model_path", help="Any model name: CTranslate2 folder, transformers folder (converted once), 'base' (bundled)."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (a pool of Ray actors; needs the 'scale' extra)."),
    workers: int = typer.Option(None, "--workers", min=1, help="ray: number of workers (default: one per GPU, else one per 2 CPUs)."),
    address: str = typer.Option(None, "--address", help="ray: a running cluster (auto, HOST:PORT, ray://HOST:PORT). Default: start Ray on this machine for the run."),
    cpus_per_worker: int = typer.Option(None, "--cpus_per_worker", min=1, help="CPU threads (and Ray CPUs) per worker (default: the CPUs shared out, at most 4)."),
    gpus_per_worker: float = typer.Option(None, "--gpus_per_worker", min=0, help="ray: GPUs per worker (default: 1 where the cluster has GPUs, else 0; 0.5 puts two workers on a GPU)."),
    language: str = typer.Option(None, "--language", help="Language of every input (default: a manifest record's own, else detected)."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate."),
    beam_size: int = typer.Option(5, "--beam_size", min=1, help="Beam size."),
    batch_size: int = typer.Option(16, "--batch_size", min=1, help="Short clips (<= 30 s) per packed CTranslate2 call."),
    long_batch_size: int = typer.Option(8, "--long_batch_size", min=1, help="Batch of faster-whisper's VAD pipeline for files over 30 s."),
    pack: bool = typer.Option(True, "--pack/--no_pack", help="Short same-language clips share 30 s windows (the fast path)."),
    shard_files: int = typer.Option(64, "--shard_files", min=1, help="At most this many files per shard (the unit of work and of resume)."),
    shard_minutes: float = typer.Option(30.0, "--shard_minutes", min=0.01, help="About this many minutes of audio per shard."),
    max_audio_hours: float = typer.Option(4.0, "--max_audio_hours", min=0.001, help="A longer file is a failure (split it), never hours of memory."),
    min_avg_logprob: float = typer.Option(-1.0, "--min_avg_logprob", help="Reject records whose average token log-probability is lower (faster-whisper's threshold)."),
    max_compression_ratio: float = typer.Option(2.4, "--max_compression_ratio", help="Reject records whose text compresses better than this (a loop)."),
    fmt: list[str] = typer.Option(None, "--format", help="Also write each file's transcript as json, txt, srt or vtt under OUT/<format>/ (repeatable)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute_type", help="auto (cuda float16, cpu int8), int8, float16, float32, ..."),
) -> None:
    """Transcribe many hours of audio into a training manifest (OUT/train.jsonl), resumable, on Ray if asked."""
    from whisper_ft.scale.run import transcribe_at_scale

    result = transcribe_at_scale(
        inputs, output_dir, model=model_path, engine=engine.strip().lower(), address=address, workers=workers,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, shard_files=shard_files,
        shard_minutes=shard_minutes, device=device, compute_type=compute_type, cpu_threads=cpus_per_worker,
        beam_size=beam_size, language=language, task=task, batch_size=batch_size, long_batch_size=long_batch_size,
        pack=pack, max_audio_seconds=max_audio_hours * 3600, min_avg_logprob=min_avg_logprob,
        max_compression_ratio=max_compression_ratio, formats=tuple(fmt or ()))
    print(result.describe())
    result.raise_for_failures()

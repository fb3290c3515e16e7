"""`whisper-ft transcribe`: a corpus -> sharded records (+ pseudo-labels), here or on Ray.

Only option parsing here; the work is in whisper_ft.scale (imported inside the command).
"""

from __future__ import annotations

from pathlib import Path

import typer

from whisper_ft.cli import app

_FILTER = "Training manifest filter: "


@app.command("transcribe")
def transcribe_command(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders, quoted globs ('data/**/*.flac'), manifests (.jsonl) or lists of paths (.txt)."),
    output_dir: Path = typer.Option(..., "--output_dir", help="Folder of record shards (part-NNNNN.jsonl), errors.jsonl and summary.json. Run again into it to transcribe only the inputs not recorded yet."),
    model_path: str = typer.Option("base", "--model_path", help="Any model name: CTranslate2 folder, transformers folder (converted once), 'base' (bundled)."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray tasks read audio, Ray actors decode; the 'scale' extra)."),
    ray_address: str = typer.Option(None, "--ray_address", help="ray: a running cluster (auto, HOST:PORT, ray://HOST:PORT). Default: start Ray on this machine for the run."),
    workers: int = typer.Option(None, "--workers", min=1, help="ray: model workers (default: one per GPU, else one per 2 CPUs)."),
    cpus_per_worker: int = typer.Option(None, "--cpus_per_worker", min=1, help="CPU threads (and Ray CPUs) per worker (default: the CPUs shared out, at most 4)."),
    gpus_per_worker: float = typer.Option(None, "--gpus_per_worker", min=0, help="ray: GPUs per worker (default: 1 where the cluster has GPUs, else 0; 0.5 puts two workers on a GPU)."),
    batch_size: int = typer.Option(16, "--batch_size", min=1, help="Short clips (<= 30 s) per packed CTranslate2 call."),
    long_batch_size: int = typer.Option(None, "--long_batch_size", min=1, help="Files over 30 s: faster-whisper's batch (default: infer-ct2's, 8 from 5 min, else 1 = sequential)."),
    language: str = typer.Option(None, "--language", help="Language of every input (default: a manifest record's own, else detected, with its probability)."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate."),
    beam_size: int = typer.Option(5, "--beam_size", min=1, help="Beam size."),
    pack: bool = typer.Option(True, "--pack/--no_pack", help="Short same-language clips share 30 s windows (the fast path)."),
    shard_files: int = typer.Option(64, "--shard_files", min=1, help="At most this many files per shard (the unit of work; an interrupted run loses at most the shards in flight)."),
    shard_minutes: float = typer.Option(10.0, "--shard_minutes", min=0.01, help="About this many minutes of audio per shard."),
    max_audio_hours: float = typer.Option(4.0, "--max_audio_hours", min=0.001, help="A longer file is an error (split it), never hours of memory."),
    verify_inputs: bool = typer.Option(False, "--verify_inputs", help="Recognise recorded inputs by content (SHA-256) instead of size and modification time."),
    fmt: list[str] = typer.Option(None, "--format", help="Also write each file's transcript under OUTPUT_DIR/<format>/: srt,vtt,txt,json,tsv (comma-separated or repeated)."),
    train_manifest: Path = typer.Option(None, "--train_manifest", help="Write the records that pass the filters here, as a manifest `finetune --train_data` reads (slices <= 30 s with sentence times)."),
    min_avg_logprob: float = typer.Option(-1.0, "--min_avg_logprob", help=_FILTER + "drop slices whose average token log-probability is lower (faster-whisper's threshold)."),
    max_compression_ratio: float = typer.Option(2.4, "--max_compression_ratio", help=_FILTER + "drop slices whose text compresses better than this (a loop)."),
    max_no_speech_prob: float = typer.Option(None, "--max_no_speech_prob", min=0, max=1, help=_FILTER + "drop slices with a segment more likely silence than this."),
    min_chars_per_second: float = typer.Option(None, "--min_chars_per_second", min=0, help=_FILTER + "drop slices with fewer characters (spaces aside) per second."),
    max_chars_per_second: float = typer.Option(None, "--max_chars_per_second", min=0, help=_FILTER + "drop slices with more characters per second."),
    agreement_model: str = typer.Option(None, "--agreement_model", help="Decode every slice with this model too, and keep it only where the two agree (--max_agreement_wer)."),
    max_agreement_wer: float = typer.Option(None, "--max_agreement_wer", min=0, help=_FILTER + "highest normalised WER (CER for zh/ja/ko-like languages) between the two models' texts (default 0.1 with --agreement_model)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute_type", help="auto (cuda float16, cpu int8), int8, float16, float32, ..."),
) -> None:
    """Transcribe a corpus into sharded records, resumable, in this process or on Ray; --train_manifest writes filtered pseudo-labels."""
    from whisper_ft.scale.labels import Filters
    from whisper_ft.scale.run import transcribe_corpus

    filters = Filters(min_avg_logprob=min_avg_logprob, max_compression_ratio=max_compression_ratio,
                      max_no_speech_prob=max_no_speech_prob, min_chars_per_second=min_chars_per_second,
                      max_chars_per_second=max_chars_per_second, max_agreement_wer=max_agreement_wer)
    result = transcribe_corpus(
        inputs, output_dir, model=model_path, engine=engine, ray_address=ray_address, workers=workers,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, shard_files=shard_files,
        shard_minutes=shard_minutes, verify_inputs=verify_inputs, train_manifest=train_manifest, filters=filters,
        agreement_model=agreement_model, formats=tuple(fmt or ()), device=device, compute_type=compute_type,
        beam_size=beam_size, language=language, task=task, batch_size=batch_size, long_batch_size=long_batch_size,
        pack=pack, max_audio_seconds=max_audio_hours * 3600)
    print(result.describe())
    result.raise_for_failures()

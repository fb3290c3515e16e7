"""`whisper-ft prepare ...`: corpora -> manifests (see whisper_ft.data).

Each command only parses options and calls a library function; the summary (utterances and hours
per split, skips per reason) goes to stdout, progress and skip warnings to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from whisper_ft.cli import app

prepare_app = typer.Typer(help="Prepare a corpus into train/dev/test manifests (JSON Lines).", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")

# Shared options (typer.Option objects are plain metadata, safe to reuse across commands).
MIN_DURATION = typer.Option(0.5, "--min_duration", help="Drop utterances shorter than this (seconds).")
MAX_DURATION = typer.Option(30.0, "--max_duration", help="Drop utterances longer than this (seconds).")
NUM_WORKERS = typer.Option(None, "--num_workers", help="Parallel workers for probing/decoding audio "
                                                       "(default: CPU count, at most 8).")
LANGUAGE = typer.Option(None, "--language", help="Language stored in each record: a Whisper code or name "
                                                  "(zh, en, chinese, ...).")


def _options(min_duration: float, max_duration: float, num_workers: Optional[int], language: Optional[str]):
    from whisper_ft.data.common import PrepareOptions, default_workers

    workers = default_workers() if num_workers is None else num_workers  # 0 is refused, not "default"
    return PrepareOptions(min_duration=min_duration, max_duration=max_duration, num_workers=workers,
                          language=language or None)


def _finish(report) -> None:
    from whisper_ft.data.common import log_skips

    log_skips(report)
    typer.echo(report.summary())


@prepare_app.command("aishell")
def aishell(
    filepath: Optional[Path] = typer.Option(
        None, "--filepath", help="data_aishell.tgz, or the extracted data_aishell/ folder (or its parent). "
                                 "Omit to download it from OpenSLR (15 GB, resumable, md5-checked)."),
    target_dir: Path = typer.Option(Path("dataset"), "--target_dir", help="Where the audio is extracted and "
                                                                          "train/dev/test.jsonl are written."),
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    num_workers: Optional[int] = NUM_WORKERS,
    language: str = typer.Option("zh", "--language", help="Language code stored in each record."),
) -> None:
    """AISHELL-1 (OpenSLR 33) -> train.jsonl, dev.jsonl, test.jsonl."""
    from whisper_ft.data.aishell import prepare_aishell

    opts = _options(min_duration, max_duration, num_workers, language)
    _finish(prepare_aishell(filepath, target_dir, opts))


@prepare_app.command("kaldi")
def kaldi(
    wav_scp: Path = typer.Option(..., "--wav_scp", help="Kaldi wav.scp: 'UTTID path' (or 'RECID path' with "
                                                        "--segments)."),
    text: Path = typer.Option(..., "--text", help="Kaldi text: 'UTTID transcript'."),
    segments: Optional[Path] = typer.Option(None, "--segments", help="Optional Kaldi segments: "
                                                                     "'UTTID RECID start end'."),
    output: Path = typer.Option(Path("dataset/train.jsonl"), "--output", help="The manifest to write."),
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    num_workers: Optional[int] = NUM_WORKERS,
    language: Optional[str] = LANGUAGE,
) -> None:
    """Kaldi / wenet / MooER data folder (wav.scp + text [+ segments]) -> one manifest."""
    from whisper_ft.data.kaldi import prepare_kaldi

    opts = _options(min_duration, max_duration, num_workers, language)
    _finish(prepare_kaldi(wav_scp, text, output, segments=segments, options=opts))


@prepare_app.command("jsonl")
def jsonl(
    input: Path = typer.Option(..., "--input", help="SLAM-ASR JSON Lines ({key, source, target}) or "
                                                    "Whisper-Finetune records (JSON Lines or a JSON list)."),
    output: Optional[Path] = typer.Option(None, "--output", help="The manifest to write "
                                                                 "(default: dataset/<input name>.jsonl)."),
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    num_workers: Optional[int] = NUM_WORKERS,
    language: Optional[str] = LANGUAGE,
) -> None:
    """Other projects' JSON manifests -> our manifest (durations re-read from the audio)."""
    from whisper_ft.data.jsonl import prepare_jsonl

    opts = _options(min_duration, max_duration, num_workers, language)
    _finish(prepare_jsonl(input, output, opts))


@prepare_app.command("hf")
def hf(
    dataset: str = typer.Option(..., "--dataset", help="A folder saved with Dataset.save_to_disk, or a hub "
                                                       "dataset name (online only)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split name(s), comma-separated (default: all)."),
    audio_column: str = typer.Option("audio", "--audio_column", help="Column holding the audio."),
    text_column: str = typer.Option("sentence", "--text_column", help="Column holding the transcript."),
    config: Optional[str] = typer.Option(None, "--config", help="Hub dataset configuration (e.g. zh-CN)."),
    output_dir: Path = typer.Option(Path("dataset"), "--output_dir", help="Where wav/<split>/ and "
                                                                          "<split>.jsonl are written."),
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    num_workers: Optional[int] = NUM_WORKERS,
    language: Optional[str] = LANGUAGE,
) -> None:
    """A Hugging Face datasets dataset -> 16 kHz wavs + one manifest per split."""
    from whisper_ft.data.hf import prepare_hf

    opts = _options(min_duration, max_duration, num_workers, language)
    _finish(prepare_hf(dataset, split, audio_column, text_column, output_dir, config=config, options=opts))


def _int_list(value: Optional[str], option: str) -> Optional[list[int]]:
    from whisper_ft.core.errors import WhisperFtError

    if not value:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise WhisperFtError(f"{option} takes comma-separated integers, e.g. {option} 130,175 (got {value!r})") \
            from None


@prepare_app.command("tts")
def tts(
    text: Path = typer.Option(..., "--text", help="Text file, one sentence per line."),
    language: str = typer.Option(..., "--language", help="Language code (zh, en, ...): picks the default voice "
                                                         "and is stored in each record."),
    voices: Optional[str] = typer.Option(None, "--voices", help="espeak-ng voices, comma-separated "
                                                                "(default: cmn for zh, en for en)."),
    speeds: Optional[str] = typer.Option(None, "--speeds", help="Words per minute, comma-separated "
                                                                "(default: 130,175)."),
    pitches: Optional[str] = typer.Option(None, "--pitches", help="Pitches 0-99, comma-separated "
                                                                  "(default: 35,50,65)."),
    output_dir: Path = typer.Option(Path("dataset/tts"), "--output_dir", help="Where wav/ and the manifests go."),
    test_fraction: float = typer.Option(0.0, "--test_fraction", help="Share of sentences for test.jsonl; "
                                                                     "no sentence is in both splits."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split."),
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    num_workers: Optional[int] = NUM_WORKERS,
) -> None:
    """Synthetic speech with espeak-ng: each line at several voices/speeds/pitches -> 16 kHz wavs + manifests."""
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.data.tts import prepare_tts

    opts = _options(min_duration, max_duration, num_workers, language)  # "chinese" -> "zh"
    if opts.language is None:
        raise WhisperFtError(f"--language {language!r}: prepare tts needs a language code, e.g. --language zh")
    voice_list = [v.strip() for v in voices.split(",") if v.strip()] if voices else None
    _finish(prepare_tts(text, opts.language, output_dir, voices=voice_list, speeds=_int_list(speeds, "--speeds"),
                        pitches=_int_list(pitches, "--pitches"), test_fraction=test_fraction, seed=seed,
                        options=opts))


@prepare_app.command("pack")
def pack(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest of short clips (e.g. dataset/train.jsonl)."),
    output: Path = typer.Option(..., "--output", help="Packed manifest to write; wavs go to <output stem>_wav/ "
                                                      "next to it."),
    window_seconds: float = typer.Option(26.0, "--window_seconds", help="Clips + gaps per window (at most 30)."),
    gap: float = typer.Option(2.0, "--gap", help="Seconds of silence between clips."),
    seed: int = typer.Option(0, "--seed", help="Seed of the order clips are packed in."),
) -> None:
    """Short clips -> packed 30 s training windows (several clips each, per-clip times as `sentences`).

    Train on the result with `whisper-ft finetune --timestamps`: the encoder sees several clips per
    window, so an epoch costs a fraction of the time and memory.
    """
    from whisper_ft.data.pack import pack_manifest

    _finish(pack_manifest(manifest, output, window_seconds=window_seconds, gap=gap, seed=seed))


@prepare_app.command("terms")
def terms(
    manifest: list[Path] = typer.Option(..., "--manifest", help="Training manifest(s) to mine (repeatable)."),
    output: Path = typer.Option(Path("terms.txt"), "--output", help="Where the list goes: one term per line."),
    top: int = typer.Option(50, "--top", min=1, help="Keep this many terms (Whisper reads at most 223 prompt tokens)."),
    min_count: int = typer.Option(3, "--min_count", min=1, help="A term must occur in at least this many utterances."),
    max_n: int = typer.Option(4, "--max_n", min=2, help="Longest term in characters (languages written without spaces)."),
) -> None:
    """Mine a term list from transcripts, for --hotwords (eval, compare, infer, infer-ct2) and --prompt_terms."""
    from whisper_ft.data.terms import prepare_terms

    found = prepare_terms(manifest, output, top=top, min_count=min_count, max_n=max_n)
    typer.echo(f"{len(found)} terms in {output}: {' '.join(t.text for t in found[:12])}{' ...' if len(found) > 12 else ''}")
    typer.echo(f"use them: --hotwords \"$(cut -f1 {output} | tr '\\n' ' ')\"")

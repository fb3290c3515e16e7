"""Write transcriptions as JSON, plain text, SRT, WebVTT or TSV (``all``: every one of them).

TSV is OpenAI whisper's: ``start<TAB>end<TAB>text`` per segment, times in whole milliseconds. JSON is ``{"language", "duration", "segments": [{"start", "end", "text"}], "text"}`` (the shape of
Whisper-Finetune's ``infer_ct2.py``), plus ``words`` per segment with word timestamps.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription

FORMATS = ("json", "txt", "srt", "vtt", "tsv")
ALL = "all"  # --format all: one file per format (needs an output folder)


def validate_format(fmt: str, *, allow_all: bool = False) -> str:
    f = (fmt or "").strip().lower().lstrip(".")
    if f == ALL and allow_all:
        return f
    if f not in FORMATS:
        choices = FORMATS + ((ALL,) if allow_all else ())
        raise WhisperFtError(f"unknown output format {fmt!r}; choose one of: {', '.join(choices)}")
    return f


def formats_of(fmt: str) -> tuple[str, ...]:
    """The formats ``--format`` stands for: itself, or every format for ``all``."""
    f = validate_format(fmt, allow_all=True)
    return FORMATS if f == ALL else (f,)


def format_timestamp(seconds: float, *, decimal_marker: str = ",") -> str:
    """``3725.5`` -> ``01:02:05,500`` (SRT); ``decimal_marker="."`` for WebVTT."""
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def ordered_segments(transcription: Transcription) -> list[Segment]:
    """Non-empty segments with times that never go backwards: each start at or after the previous
    start, each end at or after its start."""
    out = []
    prev_start = 0.0
    for seg in transcription.segments:
        text = seg.text.strip()
        if not text:
            continue
        start = max(seg.start, prev_start)
        end = max(seg.end, start)
        out.append(Segment(len(out), start, end, text, seg.tokens, seg.avg_logprob, seg.no_speech_prob, seg.words))
        prev_start = start
    return out


def to_srt(transcription: Transcription) -> str:
    blocks = []
    for i, seg in enumerate(ordered_segments(transcription), 1):
        blocks.append(f"{i}\n{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}\n{seg.text}\n")
    return "\n".join(blocks)


def to_vtt(transcription: Transcription) -> str:
    blocks = ["WEBVTT\n"]
    for seg in ordered_segments(transcription):
        start, end = format_timestamp(seg.start, decimal_marker="."), format_timestamp(seg.end, decimal_marker=".")
        blocks.append(f"{start} --> {end}\n{seg.text}\n")
    return "\n".join(blocks)


def to_tsv(transcription: Transcription) -> str:
    lines = ["start\tend\ttext"]
    for seg in ordered_segments(transcription):
        text = seg.text.replace("\t", " ").replace("\n", " ")
        lines.append(f"{int(round(seg.start * 1000))}\t{int(round(seg.end * 1000))}\t{text}")
    return "\n".join(lines) + "\n"


def to_txt(transcription: Transcription) -> str:
    return transcription.text + "\n"


def to_json(transcription: Transcription, *, indent: int | None = 2, extra: dict | None = None) -> str:
    data = transcription.to_dict()
    data["segments"] = [s.to_dict() for s in ordered_segments(transcription)]
    if extra:
        data.update(extra)
    return json.dumps(data, ensure_ascii=False, indent=indent) + "\n"


def render(transcription: Transcription, fmt: str) -> str:
    fmt = validate_format(fmt)
    return {"json": to_json, "txt": to_txt, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}[fmt](transcription)


def output_path(audio_path: str | Path, output_dir: str | Path, fmt: str) -> Path:
    return Path(output_dir) / f"{Path(audio_path).stem}.{validate_format(fmt)}"


def write_transcription(transcription: Transcription, path: str | Path, fmt: str) -> Path:
    """Write atomically (temp file, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(transcription, fmt), encoding="utf-8")
    tmp.replace(path)
    return path


def check_output_dir(path: str | Path) -> Path:
    """Create ``path`` (a folder) if needed and check it can be written, before any work is done."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise WhisperFtError(f"--output_dir {out} is a file, not a folder: give a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise WhisperFtError(f"cannot write to --output_dir {out}: {exc.strerror or exc}; give a writable folder") from exc
    return out

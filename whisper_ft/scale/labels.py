"""Pseudo-labels: records -> training slices of at most 30 s -> filters -> a training manifest.

A record (one input file's transcript, see :mod:`whisper_ft.scale.worker`) becomes training slices:
a file of at most 30 s is one slice; a longer one's segments are grouped into consecutive slices
spanning at most 30 s (``audio.start_time``/``end_time`` in the manifest), each with its timed
``sentences`` relative to the slice, so ``finetune --timestamps`` can train on them.

Each slice is judged by the filters in this order, and a dropped slice is counted under the
first one it fails (the counts add up to what was dropped):

``no_text``            nothing decoded (silence, music, a failed decode)
``too_long``           one segment over 30 s (nothing Whisper can be trained on in one window)
``no_speech_prob``     the highest ``no_speech_prob`` of its segments over ``max_no_speech_prob``
``avg_logprob``        its segments' average log-probability (weighted by duration) under ``min_avg_logprob``
``compression_ratio``  its text compresses better than ``max_compression_ratio`` (a loop)
``chars_per_second``   characters (spaces aside) per second outside [``min_chars_per_second``, ``max_chars_per_second``]
``agreement``          the second model's text of the same slice differs from it by more than
                       ``max_agreement_wer`` (normalised WER, CER for zh/ja/ko-like languages:
                       :func:`whisper_ft.core.scoring.score`, the slice's text as the reference)

Filters are applied when the manifest is written (from every record in the output folder), so
changing a threshold needs no new decoding: re-run the same command with other values.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whisper_ft.core.audio import CHUNK_SECONDS
from whisper_ft.core.errors import WhisperFtError

FILTERS = ("no_text", "too_long", "no_speech_prob", "avg_logprob", "compression_ratio", "chars_per_second",
           "agreement")
DEFAULT_AGREEMENT_WER = 0.1  # distil-whisper's threshold against its labels
_EPS = 1e-6


@dataclass
class Slice:
    """Seconds ``[start, end)`` of a record's audio and the segments in it (record times)."""

    start: float
    end: float
    segments: list[dict]

    @property
    def text(self) -> str:
        from whisper_ft.core.results import join_texts

        return join_texts(s["text"] for s in self.segments)


def training_slices(record: dict) -> list[Slice]:
    """The record's training slices (see the module docstring)."""
    segments = [s for s in record.get("segments") or () if s["text"].strip()]
    duration = record["duration"]
    if duration <= CHUNK_SECONDS + _EPS or not segments:
        return [Slice(0.0, duration, segments)]
    slices: list[Slice] = []
    for seg in segments:
        if slices and seg["end"] - slices[-1].start <= CHUNK_SECONDS + _EPS:
            slices[-1].segments.append(seg)
            slices[-1].end = seg["end"]
        else:
            slices.append(Slice(seg["start"], seg["end"], [seg]))
    return slices


@dataclass(frozen=True)
class Filters:
    """Thresholds of the training manifest (None: that filter is off)."""

    min_avg_logprob: float | None = -1.0
    max_compression_ratio: float | None = 2.4
    max_no_speech_prob: float | None = None
    min_chars_per_second: float | None = None
    max_chars_per_second: float | None = None
    max_agreement_wer: float | None = None

    def __post_init__(self) -> None:
        lo, hi = self.min_chars_per_second, self.max_chars_per_second
        if lo is not None and hi is not None and lo > hi:
            raise WhisperFtError(f"--min_chars_per_second {lo:g} is above --max_chars_per_second {hi:g}: "
                                 "give a range that can hold something")
        for name in ("max_compression_ratio", "max_no_speech_prob", "min_chars_per_second", "max_chars_per_second",
                     "max_agreement_wer"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise WhisperFtError(f"--{name} must be 0 or more (got {value:g})")

    def to_dict(self) -> dict:
        return asdict(self)


def agreement_error(label: str, other: str, language: str | None) -> float:
    """Normalised WER (CER for zh/ja/ko-like languages) of ``other`` against ``label``; a label
    that normalises to nothing agrees only with nothing."""
    from whisper_ft.core.scoring import score

    try:
        return score([label], [other], metric="auto", language=language).error_rate
    except WhisperFtError:  # nothing left of the label after normalisation
        return 0.0 if not score_units(other, language) else 1.0


def score_units(text: str, language: str | None) -> str:
    from whisper_ft.core.languages import default_metric
    from whisper_ft.core.scoring import prepare_for_metric

    return prepare_for_metric(text, metric=default_metric(language), language=language)


def _quality(piece: Slice) -> dict:
    from whisper_ft.decoding.batched import compression_ratio

    segs = piece.segments
    weights = [max(s["end"] - s["start"], 0.01) for s in segs]
    logprobs = [(s.get("avg_logprob"), w) for s, w in zip(segs, weights) if s.get("avg_logprob") is not None]
    total = sum(w for _, w in logprobs)
    no_speech = [s["no_speech_prob"] for s in segs if s.get("no_speech_prob") is not None]
    text = piece.text
    seconds = max(piece.end - piece.start, _EPS)
    return {
        "avg_logprob": round(sum(a * w for a, w in logprobs) / total, 4) if total else None,
        "no_speech_prob": round(max(no_speech), 4) if no_speech else None,
        "compression_ratio": round(compression_ratio(text), 3),
        "chars_per_second": round(len("".join(text.split())) / seconds, 2),
    }


def judge(piece: Slice, quality: dict, filters: Filters, agreement: float | None) -> str | None:
    """The first filter the slice fails (one of :data:`FILTERS`), or None when it is kept."""
    f, q = filters, quality
    if not piece.text.strip():
        return "no_text"
    if piece.end - piece.start > CHUNK_SECONDS + _EPS:
        return "too_long"
    if f.max_no_speech_prob is not None and q["no_speech_prob"] is not None and q["no_speech_prob"] > f.max_no_speech_prob:
        return "no_speech_prob"
    if f.min_avg_logprob is not None and q["avg_logprob"] is not None and q["avg_logprob"] < f.min_avg_logprob:
        return "avg_logprob"
    if f.max_compression_ratio is not None and q["compression_ratio"] > f.max_compression_ratio:
        return "compression_ratio"
    cps = q["chars_per_second"]
    if (f.min_chars_per_second is not None and cps < f.min_chars_per_second) or (
            f.max_chars_per_second is not None and cps > f.max_chars_per_second):
        return "chars_per_second"
    if f.max_agreement_wer is not None and (agreement is None or agreement > f.max_agreement_wer + _EPS):
        return "agreement"
    return None


def training_rows(record: dict, filters: Filters) -> Iterable[tuple[dict, str | None]]:
    """``(manifest row, first filter failed or None)`` for each training slice of the record."""
    audio = record["audio"]
    offset = audio.get("start_time") or 0.0
    pieces = training_slices(record)
    others = record.get("agreement")  # the agreement model's text of each slice
    for n, piece in enumerate(pieces):
        quality = _quality(piece)
        agreement = None
        if others is not None and piece.text.strip():
            other = next((o for o in others if abs(o["start"] - piece.start) < 1e-3 and abs(o["end"] - piece.end) < 1e-3),
                         None)
            if other is not None:
                agreement = round(agreement_error(piece.text, other["text"], record["language"]), 4)
                quality["agreement_error"] = agreement
        why = judge(piece, quality, filters, agreement)
        sliced = len(pieces) > 1 or record["duration"] > CHUNK_SECONDS + _EPS
        row_audio: dict = {"path": audio["path"]}
        if sliced or "start_time" in audio:
            row_audio["start_time"] = round(offset + piece.start, 3)
        if sliced or "end_time" in audio:
            row_audio["end_time"] = round(offset + piece.end, 3)
        row = {
            "audio": row_audio, "sentence": piece.text,
            "sentences": [{"start": round(max(0.0, s["start"] - piece.start), 3),
                           "end": round(max(0.0, s["end"] - piece.start), 3), "text": s["text"].strip()}
                          for s in piece.segments],
            "language": record["language"], "duration": round(piece.end - piece.start, 3),
            "id": f"{record['id']}_{n:05d}" if sliced else record["id"],
        }
        row.update({k: v for k, v in quality.items() if v is not None})
        yield row, why


@dataclass
class LabelCounts:
    """What the filters kept and dropped (training slices, and their hours)."""

    filters: Filters
    slices: int = 0
    kept: int = 0
    kept_seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))

    def to_dict(self) -> dict:
        return {"filters": self.filters.to_dict(), "slices": self.slices, "kept": self.kept,
                "kept_hours": round(self.kept_seconds / 3600, 6), "dropped": dict(self.dropped)}


def write_training_manifest(records: Iterable[dict], path: str | Path, filters: Filters) -> LabelCounts:
    """Every record's slices that pass ``filters`` as a whisper-ft manifest (absolute audio paths),
    written atomically; returns the counts."""
    path = Path(path)
    counts = LabelCounts(filters)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WhisperFtError(f"cannot write --train_manifest {path}: {exc.strerror or exc}; give a writable path") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                for row, why in training_rows(record, filters):
                    counts.slices += 1
                    if why is not None:
                        counts.dropped[why] += 1
                        continue
                    counts.kept += 1
                    counts.kept_seconds += row["duration"]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts

"""Do timestamps still work? Decode clips with timestamps and check the segments.

A fine-tune trained without timestamp tokens can forget them: segments come out empty, out of
order, or past the end of the audio (then clamped to it, which leaves zero-length segments).
A clip's timestamps are valid when it has at least one segment and every segment has text,
``0 <= start < end <= duration`` and starts no earlier than the previous one ended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription

TOLERANCE = 0.02  # one timestamp step


def timestamp_problem(segments: list[Segment], duration: float, *, tol: float = TOLERANCE) -> str | None:
    """What is wrong with a clip's segments (one short phrase), or None when they are valid."""
    if not segments:
        return "no segments"
    prev_end = 0.0
    for k, s in enumerate(segments):
        if not s.text.strip():
            return f"segment {k} has no text"
        if s.start < -tol or s.end > duration + tol:
            return f"segment {k} ({s.start:.2f}-{s.end:.2f} s) outside the clip (0-{duration:.2f} s)"
        if s.end - s.start <= 0:
            return f"segment {k} has no length ({s.start:.2f}-{s.end:.2f} s)"
        if s.start < prev_end - tol:
            return f"segment {k} starts at {s.start:.2f} s, before the previous one ended ({prev_end:.2f} s)"
        prev_end = s.end
    return None


@dataclass
class TimestampCheck:
    """One clip: its segments (start, end, text) and what is wrong with them (None = valid)."""

    id: str
    duration: float
    segments: list[tuple[float, float, str]]
    problem: str | None

    @property
    def valid(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict:
        return {"id": self.id, "duration": round(self.duration, 3), "valid": self.valid, "problem": self.problem,
                "segments": [{"start": round(a, 3), "end": round(b, 3), "text": t} for a, b, t in self.segments]}


def timestamped_transcriber(backend, *, num_beams: int = 1, task: str = "transcribe"):
    """``f(audio, language) -> Transcription`` with timestamps, temperature 0, for a
    :class:`whisper_ft.decoding.backend.Backend` (the same loaded model; nothing is loaded again)."""
    from whisper_ft.decoding.options import DecodingOptions

    if not callable(getattr(backend, "transcribe", None)):
        raise WhisperFtError(f"cannot decode with timestamps using {type(backend).__name__}: "
                             "it is not a decoding backend (no transcribe method)")
    options = DecodingOptions(task=task, beam_size=num_beams, temperature=0.0)

    def transcribe(audio: np.ndarray, language: str | None) -> Transcription:
        return backend.transcribe(audio, options.replace(language=language))
    return transcribe


def check_timestamps(transcribe, clips: list[tuple[str, np.ndarray, str | None]], *,
                     sample_rate: int = 16_000) -> list[TimestampCheck]:
    """Transcribe each ``(id, audio, language)`` with timestamps and check its segments."""
    out = []
    for key, audio, language in clips:
        duration = len(audio) / sample_rate
        result = transcribe(audio, language)
        segs = [(float(s.start), float(s.end), s.text) for s in result.segments]
        out.append(TimestampCheck(key, duration, segs, timestamp_problem(result.segments, duration)))
    return out

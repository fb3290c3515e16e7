"""One parser for Whisper's timestamped output: ``<|t0|> text <|t1|><|t1|> text <|t2|> ...``.

Used by the transformers long-form path (:func:`whisper_ft.decoding.hf_transcribe.segments_from_tokens`),
the packed splitter (:func:`whisper_ft.decoding.packing.split_packed_tokens`, which adds its "untrustworthy
split" judgement on top) and the server's batched decoding (:mod:`whisper_ft.decoding.batched`).
Each caller decides what to do with an unfinished tail; the parse itself is the same for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whisper_ft.models.generation import TIMESTAMP_STEP


@dataclass
class TimestampParse:
    """``segments``: every closed ``(start, end, text tokens)`` pair in order (a pair may hold no
    text); ``open_start``: the start of a segment left open at the end (an opening timestamp, or text
    after the last closing one), None when the output ends closed; ``open_tokens``: its text tokens;
    ``last_end``: the time of the last closing timestamp (0 at first)."""

    segments: list[tuple[float, float, list[int]]] = field(default_factory=list)
    open_start: float | None = None
    open_tokens: list[int] = field(default_factory=list)
    last_end: float = 0.0


def parse_timestamp_tokens(tokens, *, timestamp_begin: int, eot: int) -> TimestampParse:
    """Cut a timestamped token sequence into segments (timestamp tokens: ids from
    ``timestamp_begin`` on; text tokens: ids below ``eot``; other specials are skipped). Text before
    an opening timestamp starts where the previous segment ended."""
    out = TimestampParse()
    start: float | None = None
    current: list[int] = []
    for t in tokens:
        if t >= timestamp_begin:
            ts = (t - timestamp_begin) * TIMESTAMP_STEP
            if start is None:
                start = ts
            else:
                out.segments.append((start, ts, current))
                current, start, out.last_end = [], None, ts
        elif t < eot:
            if start is None:
                start = out.last_end
            current.append(int(t))
    out.open_start, out.open_tokens = start, current
    return out

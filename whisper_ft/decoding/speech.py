"""Speech regions (Silero VAD, which ships inside faster-whisper and runs offline) and segment times
clipped to them.

With VAD, faster-whisper decodes the speech chunks glued together and maps each segment's times
back to the file. A segment whose end overshoots its chunk by a few hundred milliseconds in the
glued audio lands in the *next* chunk in the file, which can be minutes later: a 3 s utterance
became a 5-minute subtitle cue. :func:`clip_to_speech` moves such a start or end back onto the
speech the segment really covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.results import Segment

# A segment reaching less than this far into a speech chunk (and not covering all of a shorter
# one) is timestamp slack, not speech of that chunk. Whisper's timestamps are 20 ms steps, often
# off by a few hundred ms; the shortest word with faster-whisper's 400 ms VAD padding is ~1 s long.
SPEECH_SLACK_SECONDS = 1.0


def speech_chunks(audio: np.ndarray, parameters: dict | None = None) -> list[dict]:
    """faster-whisper's speech chunks (``{"start", "end"}`` in samples) with its default VAD options,
    or ``parameters`` (``VadOptions`` fields: threshold, min_silence_duration_ms, speech_pad_ms, ...)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return get_speech_timestamps(audio, VadOptions(**(parameters or {})))


def chunk_seconds(chunks: list[dict]) -> list[tuple[float, float]]:
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


def clip_to_speech(segment: Segment, speech: list[tuple[float, float]], *,
                   slack: float = SPEECH_SLACK_SECONDS) -> Segment:
    """The segment with its start moved forward to the first, and its end back to the end of the
    last, speech chunk it really covers (overlaps by at least ``slack`` seconds, or entirely).
    A segment that covers no chunk is returned unchanged."""
    covered = [(s, e) for s, e in speech
               if min(segment.end, e) - max(segment.start, s) >= min(slack, e - s) - 1e-6
               and min(segment.end, e) > max(segment.start, s)]
    if not covered:
        return segment
    start = max(segment.start, covered[0][0])
    end = max(start, min(segment.end, covered[-1][1]))
    if (start, end) == (segment.start, segment.end):
        return segment
    return Segment(segment.id, start, end, segment.text, segment.tokens, segment.avg_logprob,
                   segment.no_speech_prob, segment.words)


def clip_all_to_speech(segments: Iterable[Segment], speech: list[tuple[float, float]]) -> Iterator[Segment]:
    for seg in segments:
        yield clip_to_speech(seg, speech)

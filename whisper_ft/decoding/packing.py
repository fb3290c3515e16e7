"""Packing: several short clips laid one after another in one 30 s Whisper window.

Whisper always encodes 30 s windows, so a 3 s clip costs as much encoder time as a 30 s one.
Laying same-language clips one after another with a gap of silence between them fills the
window: the packed decoding paths (CTranslate2: whisper_ft.decoding.ct2, transformers:
whisper_ft.decoding.hf) decode packed windows with timestamps and split the text back with
:func:`split_packed_tokens` (one splitter for both backends), and ``whisper-ft prepare pack``
writes packed training windows whose per-clip times become timestamp labels
(whisper_ft.data.pack). Pure numpy, no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE

PACK_GAP_SECONDS = 2.0  # silence between clips (1 s: whisper-base often ran short clips together)
PACK_WINDOW_SECONDS = 26.0  # clips + gaps per window: room before 30 s so the last clip is finished
PACK_OVERLAP_TOLERANCE = 1.0  # seconds a segment may spill into a neighbouring clip (timestamp slack)


@dataclass
class PackedWindow:
    """Clips sharing one window: their indices (in window order) and (start, end) seconds in it."""

    language: str | None
    indices: list[int]
    spans: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        return self.spans[-1][1] if self.spans else 0.0


def plan_packed_windows(
    durations: list[float],
    languages: list[str | None],
    *,
    gap: float = PACK_GAP_SECONDS,
    window_seconds: float = PACK_WINDOW_SECONDS,
    shuffle_seed: int | None = None,
) -> list[PackedWindow]:
    """First-fit decreasing packing of clips into windows (first fit in a seeded random order with
    ``shuffle_seed``), one language per window; a clip longer
    than ``window_seconds`` gets a window of its own."""
    windows: list[PackedWindow] = []
    for lang in dict.fromkeys(languages):
        order = sorted((i for i, x in enumerate(languages) if x == lang), key=lambda i: (-durations[i], i))
        if shuffle_seed is not None:  # training: mixed windows, not runs of similar (often the same) clips
            order = [order[k] for k in np.random.default_rng(shuffle_seed).permutation(len(order))]
        bins: list[list] = []  # [used seconds, indices]
        for i in order:
            for b in bins:
                if b[0] + gap + durations[i] <= window_seconds:
                    b[0] += gap + durations[i]
                    b[1].append(i)
                    break
            else:
                bins.append([durations[i], [i]])
        for _, idx in bins:
            spans, t = [], 0.0
            for k, i in enumerate(idx):
                t += gap if k else 0.0
                spans.append((t, t + durations[i]))
                t += durations[i]
            windows.append(PackedWindow(lang, idx, spans))
    return windows


def packed_audio(audios: list[np.ndarray], window: PackedWindow, gap: float = PACK_GAP_SECONDS) -> np.ndarray:
    """The window's samples: its clips with ``gap`` seconds of silence between them."""
    out = np.zeros(int(round(window.seconds * SAMPLE_RATE)) + 1, dtype=np.float32)
    for i, (start, _) in zip(window.indices, window.spans):
        a = np.asarray(audios[i], dtype=np.float32)
        s = int(round(start * SAMPLE_RATE))
        a = a[: max(0, len(out) - s)]
        out[s:s + len(a)] = a
    return out


# --- splitting a packed window's timestamped output back into clips --------------------------
#
# The window is decoded *with* timestamps (so the model sees real 30 s inputs, unlike trimming
# the padding, which makes it loop) and each timestamped segment goes to the clip it overlaps
# most. A clip's share is refused (None: the caller decodes that clip on its own) whenever it
# is not clean: a segment straddling two clips, a segment in a gap, an unfinished last segment,
# a window cut at the length limit, a clip with no text -- and then its neighbours too, because
# a clip without text almost always means its words went into a neighbour's segment (beam search
# does this: one segment "<a> words of clip k ... words of clip k+1 <b>" whose end time lands
# before clip k+1, so by the times alone clip k+1 looks silent and clip k gets both texts).


def parse_timestamped_tokens(
    tokens: list[int], *, eot: int, timestamp_begin: int, truncated: bool = False,
) -> tuple[list[tuple[float, float, list[int]]], float | None]:
    """The finished ``(start, end, text tokens)`` segments of a timestamped token sequence and
    the time from which the output is unfinished (an open segment or a cut; None if complete).
    Text before any timestamp starts where the previous segment ended (0 at first). The parse is
    :func:`whisper_ft.decoding.timestamps.parse_timestamp_tokens`, shared with both decoders."""
    from whisper_ft.decoding.timestamps import parse_timestamp_tokens

    parsed = parse_timestamp_tokens(tokens, timestamp_begin=timestamp_begin, eot=eot)
    unfinished = parsed.open_start
    if unfinished is None and truncated:
        unfinished = parsed.last_end
    return parsed.segments, unfinished


def assign_packed_segments(
    segments: list[tuple[float, float, object]],
    window: PackedWindow,
    *,
    unfinished_from: float | None = None,
    tolerance: float = PACK_OVERLAP_TOLERANCE,
) -> list[list | None]:
    """Each clip's segment payloads (in order), or None where its share is not trustworthy (see
    the comment above). ``segments``: ``(start, end, payload)`` in window seconds."""
    n = len(window.spans)
    shares: list[list] = [[] for _ in range(n)]
    bad = [False] * n
    for seg_start, seg_end, payload in segments:
        overlaps = [max(0.0, min(seg_end, e) - max(seg_start, s)) for s, e in window.spans]
        ranked = sorted(range(n), key=lambda k: -overlaps[k])
        k = ranked[0]
        if overlaps[k] <= 0.0:  # text in a gap: whose is it?
            before = [j for j in range(n) if window.spans[j][1] <= seg_start]
            after = [j for j in range(n) if window.spans[j][0] >= seg_end]
            for j in before[-1:] + after[:1]:
                bad[j] = True
            continue
        if n > 1 and overlaps[ranked[1]] > tolerance:  # runs two clips together
            bad[k] = bad[ranked[1]] = True
        shares[k].append(payload)
    if unfinished_from is not None:  # everything after an unfinished segment's start is unreliable
        for j, (_, e) in enumerate(window.spans):
            if e > unfinished_from + tolerance:
                bad[j] = True
    # a clip with no text and no other explanation (straddle, gap, unfinished end): its words are
    # probably in a neighbour's segment
    unexplained = [j for j in range(n) if not shares[j] and not bad[j]]
    for j in unexplained:
        bad[j] = True
        for nb in (j - 1, j + 1):
            if 0 <= nb < n:
                bad[nb] = True
    return [None if bad[j] else shares[j] for j in range(n)]


def split_packed_tokens(
    tokens: list[int],
    window: PackedWindow,
    *,
    eot: int,
    timestamp_begin: int,
    truncated: bool = False,
    tolerance: float = PACK_OVERLAP_TOLERANCE,
) -> list[list[int] | None]:
    """Each clip's text tokens from a window's timestamped output (timestamp tokens are ids from
    ``timestamp_begin`` on, text tokens those below ``eot``), or None where the split is not
    trustworthy; ``truncated``: the output was cut at the length limit."""
    segments, unfinished = parse_timestamped_tokens(tokens, eot=eot, timestamp_begin=timestamp_begin,
                                                    truncated=truncated)
    shares = assign_packed_segments(segments, window, unfinished_from=unfinished, tolerance=tolerance)
    return [None if share is None else [t for seg in share for t in seg] for share in shares]


def plan_given_language_windows(
    durations: list[float],
    languages: list[str | None],
    *,
    gap: float = PACK_GAP_SECONDS,
    window_seconds: float = PACK_WINDOW_SECONDS,
) -> list[PackedWindow]:
    """Windows for the clips whose language is given (the others are decoded unpacked, where the
    language is detected); window indices refer to the full list."""
    known = [i for i, lang in enumerate(languages) if lang is not None]
    windows = plan_packed_windows([durations[i] for i in known], [languages[i] for i in known], gap=gap,
                                  window_seconds=window_seconds)
    for w in windows:
        w.indices = [known[i] for i in w.indices]
    return windows


def take_packed_results(
    windows: list[PackedWindow],
    sequences: list[list[int]],
    results: list,
    refused: list[int],
    *,
    eot: int,
    timestamp_begin: int,
    limit: int,
    max_new_tokens: int | None,
) -> None:
    """Split each window's timestamped output back into ``results`` (per clip, capped at
    ``max_new_tokens``); the clips whose split is not trustworthy go to ``refused`` (decode them
    alone). ``limit``: an output this long was cut at the length cap."""
    for w, seq in zip(windows, sequences):
        split = split_packed_tokens(seq, w, eot=eot, timestamp_begin=timestamp_begin, truncated=len(seq) >= limit)
        for i, toks in zip(w.indices, split):
            if toks is None:
                refused.append(i)
            else:
                results[i] = toks[:max_new_tokens] if max_new_tokens is not None else toks


def add_packing_stats(stats: dict | None, n_clips: int, packed: list[PackedWindow], refused: int) -> None:
    """Accumulate ``windows``, ``packed_clips``, ``refused_clips`` (packed, then decoded alone) and
    ``unpacked_clips`` (all clips decoded unpacked) into ``stats``."""
    if stats is None:
        return
    n_packed = sum(len(w.indices) for w in packed)
    for key, n in (("windows", len(packed)), ("packed_clips", n_packed), ("refused_clips", refused),
                   ("unpacked_clips", n_clips - n_packed + refused)):
        stats[key] = stats.get(key, 0) + n


def decode_batches(durations: list[float], batch_size: int, *, pack: bool,
                   gap: float = PACK_GAP_SECONDS, window_seconds: float = PACK_WINDOW_SECONDS) -> list[list[int]]:
    """Clip indices in the batches a decoder is called with, longest clips first (``eval`` and the
    benchmarks batch this way).

    Unpacked: ``batch_size`` clips per batch (one window each). Packed: about ``batch_size``
    windows' worth of clips per batch (each clip's seconds plus a gap, up to ``batch_size`` windows),
    so that the windows are filled from a larger pool than ``batch_size`` clips (which would fill
    only a few windows, the last one half empty) while each engine call still decodes about
    ``batch_size`` windows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    if not pack:
        return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    budget = batch_size * window_seconds
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0.0
    for i in order:
        cost = min(durations[i], window_seconds) + gap
        if current and used + cost > budget:
            batches.append(current)
            current, used = [], 0.0
        current.append(i)
        used += cost
    if current:
        batches.append(current)
    return batches

"""Packing: several short clips laid one after another in one 30 s Whisper window.

Whisper always encodes 30 s windows, so a 3 s clip costs as much encoder time as a 30 s one.
Laying same-language clips one after another with a gap of silence between them fills the
window: the CTranslate2 fast path decodes packed windows with timestamps and splits the text
back (whisper_ft.decoding.ct2), and ``whisper-ft prepare pack`` writes packed training windows
whose per-clip times become timestamp labels (whisper_ft.data.pack). Pure numpy, no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_ft.audio import SAMPLE_RATE

PACK_GAP_SECONDS = 2.0  # silence between clips (1 s: whisper-base often ran short clips together)
PACK_WINDOW_SECONDS = 26.0  # clips + gaps per window: room before 30 s so the last clip is finished


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

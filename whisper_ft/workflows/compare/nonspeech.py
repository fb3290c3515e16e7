"""Non-speech test clips, generated: silence, white and pink noise at a few levels, pure tones.

A model should transcribe none of them; any word it writes here is a hallucination (fine-tuned
Whisper models are known to answer silence with sentences from their training set). The clips are
seeded, so every model and every run hears the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError

NOISE_LEVELS_DBFS = (-50.0, -35.0, -20.0)  # RMS: faint room noise .. loud hiss
TONES_HZ = (220.0, 1000.0, 4000.0)
TONE_DBFS = -20.0
DEFAULT_SECONDS = 4.0


@dataclass(frozen=True)
class NonSpeechClip:
    name: str  # e.g. "pink-35dB", "tone-1000Hz"
    kind: str  # silence | white | pink | tone
    level_dbfs: float | None  # RMS level; None for silence
    audio: np.ndarray  # float32, 16 kHz mono

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -inf for silence."""
    rms = float(np.sqrt(np.mean(np.square(audio.astype(np.float64))))) if audio.size else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def _scale_to(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(x)))
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32) if rms > 0 else x.astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain (power ~ 1/f)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def nonspeech_clips(seconds: float = DEFAULT_SECONDS, *, seed: int = 0,
                    noise_levels_dbfs=NOISE_LEVELS_DBFS, tones_hz=TONES_HZ) -> list[NonSpeechClip]:
    """Silence, white and pink noise at each level, and a tone at each frequency (see module doc)."""
    if not 0 < seconds <= 30:
        raise WhisperFtError(f"non-speech clips must be between 0 and 30 s long (got {seconds})")
    n = int(round(seconds * SAMPLE_RATE))
    rng = np.random.default_rng(seed)
    clips = [NonSpeechClip("silence", "silence", None, np.zeros(n, dtype=np.float32))]
    for level in noise_levels_dbfs:
        clips.append(NonSpeechClip(f"white{level:+.0f}dB", "white", level, _scale_to(rng.standard_normal(n), level)))
        clips.append(NonSpeechClip(f"pink{level:+.0f}dB", "pink", level, _scale_to(pink_noise(n, rng), level)))
    t = np.arange(n) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks at the ends
    for hz in tones_hz:
        clips.append(NonSpeechClip(f"tone{hz:.0f}Hz", "tone", TONE_DBFS,
                                   _scale_to(np.sin(2 * np.pi * hz * t) * fade, TONE_DBFS)))
    return clips

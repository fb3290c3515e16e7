"""Non-speech training samples with an empty transcript (``--empty_audio_ratio``), against hallucination.

A fine-tuned Whisper that has only ever seen speech learns that every window holds words, and
writes some on silence. These samples teach it the opposite: their label is the prompt and
``<|endoftext|>`` at once (``<|startoftranscript|> <|zh|> <|transcribe|> <|notimestamps|>
<|endoftext|>``). They always use the ``<|notimestamps|>`` form, also with ``--timestamps``:
in timestamp mode Whisper's decoders force a timestamp as the first token, so "nothing" is only
expressible after ``<|notimestamps|>``.

The audio is made when the sample is loaded, from the generator the dataset passes in (seeded by
seed, epoch and index), so every epoch hears different noise and a resumed run the same noise:

- ``silence``: digital zero, or a faint dither (-90 .. -70 dBFS);
- ``white`` / ``pink`` noise at -60 .. -20 dBFS RMS;
- ``hum``: 50 or 60 Hz mains hum with harmonics, or a steady tone (100 Hz .. 4 kHz), -50 .. -20 dBFS;
- or a random piece of a file of ``--empty_audio_dir`` (noise, room tone, music beds), at a random gain.

Each sample's duration is drawn from the real training clips' durations, so non-speech samples
join batches of similar length; its language is drawn from theirs too.

What they teach is a high probability of ``<|endoftext|>`` right after the prompt. Whisper's
decoders forbid exactly that token as the first one by default (``begin_suppress_tokens`` in
transformers, ``suppress_blank`` in OpenAI's and faster-whisper's decoding), so the empty
transcript only comes out where decoding lets ``<|endoftext|>`` come first; under the default the
model is forced to write one token and usually stops after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_ft.core.audio import AUDIO_EXTENSIONS, SAMPLE_RATE
from whisper_ft.core.errors import DataError

KINDS = ("silence", "white", "pink", "hum")


def _db(rng: np.random.Generator, low: float, high: float) -> float:
    return float(10.0 ** (rng.uniform(low, high) / 20.0))


def _at_rms(noise: np.ndarray, rms: float) -> np.ndarray:
    current = float(np.sqrt(np.mean(noise**2))) or 1.0
    return noise * (rms / current)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain (unit RMS)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    out = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return out / (np.sqrt(np.mean(out**2)) or 1.0)


def generate_nonspeech(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of non-speech audio of ``kind`` (see the module docstring), float32 in [-1, 1]."""
    n = max(1, int(round(seconds * SAMPLE_RATE)))
    if kind == "silence":
        audio = np.zeros(n) if rng.random() < 0.5 else _at_rms(rng.standard_normal(n), _db(rng, -90, -70))
    elif kind == "white":
        audio = _at_rms(rng.standard_normal(n), _db(rng, -60, -20))
    elif kind == "pink":
        audio = _at_rms(pink_noise(n, rng), _db(rng, -60, -20))
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        if rng.random() < 0.6:  # mains hum and its harmonics
            f0 = 50.0 if rng.random() < 0.5 else 60.0
            audio = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
        else:  # a steady tone
            audio = np.sin(2 * np.pi * np.exp(rng.uniform(np.log(100), np.log(4000))) * t)
        audio = _at_rms(audio, _db(rng, -50, -20))
    else:
        raise ValueError(f"unknown non-speech kind {kind!r}; one of {', '.join(KINDS)}")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def audio_files(folder: str | Path) -> list[Path]:
    """The audio files under ``folder`` (recursively, sorted); :class:`DataError` when there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise DataError(f"--empty_audio_dir {folder}: no audio files ({', '.join(AUDIO_EXTENSIONS[:4])}, ...) in it")
    return files


def piece_of_file(path: Path, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A random ``seconds`` of ``path`` (the whole file when shorter), at a random gain of -20 .. 0 dB."""
    from whisper_ft.core.audio import load_audio

    audio = load_audio(path)
    n = int(round(seconds * SAMPLE_RATE))
    if len(audio) > n:
        start = int(rng.integers(0, len(audio) - n + 1))
        audio = audio[start : start + n]
    return np.clip(audio * _db(rng, -20, 0), -1.0, 1.0).astype(np.float32)


@dataclass
class EmptyAudioSample:
    """A non-speech training sample: duck-types :class:`whisper_ft.training.data.Sample` for the dataset
    and the sampler (key, language, duration, empty ``text_ids``, no segments)."""

    index: int
    language: str
    seconds: float
    files: tuple[Path, ...] = ()  # --empty_audio_dir; empty = generated noise

    text_ids: tuple = ()
    segments: None = None

    @property
    def key(self) -> str:
        return f"empty-audio-{self.index}"

    @property
    def duration(self) -> float:
        return self.seconds

    def load_audio(self, rng: np.random.Generator) -> np.ndarray:
        if self.files:
            return piece_of_file(self.files[int(rng.integers(len(self.files)))], self.seconds, rng)
        return generate_nonspeech(KINDS[int(rng.integers(len(KINDS)))], self.seconds, rng)


def empty_audio_samples(count: int, durations: list[float], languages: list[str], *, seed: int,
                        folder: str | Path | None = None) -> list[EmptyAudioSample]:
    """``count`` non-speech samples; durations and languages drawn (seeded) from the real clips'."""
    files = tuple(audio_files(folder)) if folder else ()
    rng = np.random.default_rng([seed, 7919])  # its own stream: the data order's is untouched
    picks = rng.integers(0, len(durations), size=count)
    return [EmptyAudioSample(i, languages[j], float(min(30.0, durations[j])), files) for i, j in enumerate(picks)]

"""Optional data augmentation, configured by a JSON file (``--augment_config``), off by default.

The file is a list of augmentations, each applied with probability ``prob`` (Whisper-Finetune's
format)::

    [
      {"type": "speed",  "prob": 0.5, "params": {"min_speed_rate": 0.9, "max_speed_rate": 1.1, "num_rates": 3}},
      {"type": "shift",  "prob": 0.5, "params": {"min_shift_ms": -5, "max_shift_ms": 5}},
      {"type": "volume", "prob": 0.5, "params": {"min_gain_dBFS": -15, "max_gain_dBFS": 15}},
      {"type": "noise",  "prob": 0.5, "params": {"min_snr_dB": 10, "max_snr_dB": 50, "noise_dir": "dataset/noise"}}
    ]

Every random choice comes from the generator the dataset passes in, seeded by (seed, epoch,
sample index): a run is reproducible under ``--seed`` and a resumed run sees the same audio.
Speed perturbation rescales the sentence times (for timestamp labels); a shift moves them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisper_ft.core.audio import AUDIO_EXTENSIONS, SAMPLE_RATE
from whisper_ft.core.errors import DataError

# type -> {param: default}
KNOWN = {
    "speed": {"min_speed_rate": 0.9, "max_speed_rate": 1.1, "num_rates": 3},
    "shift": {"min_shift_ms": -5.0, "max_shift_ms": 5.0},
    "volume": {"min_gain_dBFS": -15.0, "max_gain_dBFS": 15.0},
    "noise": {"min_snr_dB": 10.0, "max_snr_dB": 50.0, "noise_dir": None},
}

# (start, end, payload) where payload is whatever the caller attaches (text token ids).
Timed = tuple[float, float, object]


@dataclass
class Augmentation:
    type: str
    prob: float
    params: dict = field(default_factory=dict)


@dataclass
class Augmenter:
    """Applies the configured augmentations to (audio, sentence times)."""

    augmentations: list[Augmentation]
    noise_files: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.augmentations)

    def __call__(self, audio: np.ndarray, segments: list[Timed] | None, rng: np.random.Generator):
        """Augmented (audio, segments); the input array is never modified."""
        for aug in self.augmentations:
            if rng.random() >= aug.prob:
                continue
            p = aug.params
            if aug.type == "speed":
                audio, segments = speed_perturb(audio, segments, rng, p)
            elif aug.type == "shift":
                shift_ms = rng.uniform(p["min_shift_ms"], p["max_shift_ms"])
                audio, segments = time_shift(audio, segments, shift_ms / 1000.0)
            elif aug.type == "volume":
                gain_db = rng.uniform(p["min_gain_dBFS"], p["max_gain_dBFS"])
                audio = np.clip(audio * 10.0 ** (gain_db / 20.0), -1.0, 1.0).astype(np.float32)
            elif aug.type == "noise":
                audio = self._add_noise(audio, rng, p)
        return audio, segments

    def _add_noise(self, audio: np.ndarray, rng: np.random.Generator, p: dict) -> np.ndarray:
        from whisper_ft.core.audio import load_audio

        noise = load_audio(self.noise_files[int(rng.integers(len(self.noise_files)))])
        if len(noise) < len(audio):
            noise = np.tile(noise, int(np.ceil(len(audio) / len(noise))))
        start = int(rng.integers(0, len(noise) - len(audio) + 1))
        noise = noise[start : start + len(audio)]
        snr_db = rng.uniform(p["min_snr_dB"], p["max_snr_dB"])
        speech_power = float(np.mean(audio**2)) + 1e-10
        noise_power = float(np.mean(noise**2)) + 1e-10
        scale = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
        return np.clip(audio + scale * noise, -1.0, 1.0).astype(np.float32)


def speed_perturb(audio: np.ndarray, segments, rng: np.random.Generator, p: dict):
    """Play ``audio`` at a rate drawn from ``num_rates`` evenly spaced rates (1.0 = unchanged).

    Like Kaldi's speed perturbation, tempo and pitch change together; times are divided by the rate.
    """
    rates = np.linspace(p["min_speed_rate"], p["max_speed_rate"], int(p["num_rates"]))
    rate = float(rates[int(rng.integers(len(rates)))])
    if abs(rate - 1.0) < 1e-6:
        return audio, segments
    import soxr

    out = soxr.resample(audio, SAMPLE_RATE * rate, SAMPLE_RATE).astype(np.float32)
    if segments is not None:
        segments = [(s / rate, e / rate, payload) for s, e, payload in segments]
    return out, segments


def time_shift(audio: np.ndarray, segments, seconds: float):
    """Delay the audio by ``seconds`` (silence in front) or, when negative, cut its beginning."""
    n = int(round(abs(seconds) * SAMPLE_RATE))
    if n == 0:
        return audio, segments
    if seconds > 0:
        out = np.concatenate([np.zeros(n, np.float32), audio])
    else:
        out = audio[min(n, len(audio) - 1) :]
    if segments is not None:
        segments = [(max(0.0, s + seconds), max(0.0, e + seconds), payload) for s, e, payload in segments]
    return out, segments


def _fail(path, message: str):
    raise DataError(f"--augment_config {path}: {message}")


def load_augmenter(path: str | Path | None) -> Augmenter:
    """Read and validate an augmentation config; ``None`` gives an augmenter that does nothing."""
    if not path:
        return Augmenter([])
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        _fail(path, f"not readable JSON ({exc})")
    if isinstance(raw, dict):
        raw = raw.get("augmentations", [])
    if not isinstance(raw, list):
        _fail(path, 'expected a list of {"type", "prob", "params"} objects')
    augmentations, noise_files = [], []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("type") not in KNOWN:
            _fail(path, f"item {i}: \"type\" must be one of {', '.join(KNOWN)}")
        kind = item["type"]
        prob = item.get("prob", 1.0)
        if not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
            _fail(path, f"item {i} ({kind}): \"prob\" must be a number in [0, 1]")
        params = dict(KNOWN[kind])
        given = item.get("params") or {}
        unknown = sorted(set(given) - set(params))
        if unknown:
            _fail(path, f"item {i} ({kind}): unknown params {', '.join(unknown)}; known: {', '.join(params)}")
        params.update(given)
        if kind == "speed" and not (0 < params["min_speed_rate"] <= params["max_speed_rate"]
                                    and int(params["num_rates"]) >= 1):
            _fail(path, f"item {i} (speed): need 0 < min_speed_rate <= max_speed_rate and num_rates >= 1")
        if kind == "noise":
            noise_dir = params["noise_dir"]
            if not noise_dir:
                _fail(path, f"item {i} (noise): give params.noise_dir, a folder of noise recordings")
            noise_dir = Path(noise_dir)
            if not noise_dir.is_absolute() and not noise_dir.is_dir():
                noise_dir = path.parent / noise_dir  # relative to the config file
            found = sorted(p for p in noise_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) \
                if noise_dir.is_dir() else []
            if not found:
                _fail(path, f"item {i} (noise): no audio files in {noise_dir}")
            noise_files = found
        if prob > 0:
            augmentations.append(Augmentation(kind, float(prob), params))
    return Augmenter(augmentations, noise_files)

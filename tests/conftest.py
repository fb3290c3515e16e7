"""Shared fixtures: a tiny random Whisper (built once per session) and small generated audio."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

# One heavy process on 2 cores: keep torch from oversubscribing threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "audio"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random multilingual Whisper folder (transformers format, complete processor)."""
    from tests.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny") / "tiny-whisper")


@pytest.fixture(scope="session")
def tiny_ct2(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model converted to CTranslate2 (float32), once per session."""
    from whisper_ft.models.ct2_export import convert_model

    return convert_model(tiny_model_dir, tmp_path_factory.mktemp("tiny-ct2") / "tiny-ft-ct2",
                         quantization="float32").output_dir


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``whisper-ft ARGS`` in this process: (exit code, stdout, stderr)."""
    from whisper_ft.cli import main

    try:
        main(list(map(str, args)))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cli(capsys):
    """``cli("eval", "--model_path", ...)`` -> (exit code, stdout, stderr) of the real command line."""
    return lambda *args: run_cli(list(args), capsys)


def make_tone(seconds: float, sr: int = 16_000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A tone plus a little noise: non-silent audio of a known length."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def make_wav(tmp_path):
    """``make_wav("a.wav", 1.5, sr=8000, channels=2)`` writes a wav and returns its path."""
    import soundfile as sf

    def _make(name: str, seconds: float = 1.0, sr: int = 16_000, channels: int = 1, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = make_tone(seconds, sr, seed=seed)
        if channels > 1:
            audio = np.stack([audio] * channels, axis=1)
        sf.write(str(path), audio, sr)
        return path

    return _make


@pytest.fixture(scope="session")
def shared_audio_manifest() -> list[dict]:
    """The records of ../shared/audio/manifest.jsonl (real speech); skips where it is absent."""
    manifest = SHARED_AUDIO / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"needs real speech clips at {SHARED_AUDIO} (absent on this machine)")
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]

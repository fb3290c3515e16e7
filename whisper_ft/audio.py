"""Decode audio files to what Whisper wants: 16 kHz mono float32 in [-1, 1].

soundfile (libsndfile) decodes wav/flac/ogg/mp3 quickly; anything it cannot read (m4a/aac, odd
containers) falls back to PyAV, which faster-whisper already depends on. Resampling uses soxr.
We never go through ``datasets.Audio`` (it needs torchcodec, which does not load with CPU torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from whisper_ft.errors import DataError

SAMPLE_RATE = 16_000  # Hz, Whisper's input rate
CHUNK_SECONDS = 30  # seconds of audio in one Whisper input window
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4")


def _read_soundfile(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        first = int(round((start or 0.0) * sr))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        if first > 0:
            f.seek(min(first, f.frames))
        data = f.read(frames=max(0, last - first), dtype="float32", always_2d=True)
    return data.mean(axis=1), sr


def _read_pyav(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise DataError(f"{path}: no audio stream")
        # Let PyAV resample straight to our rate: mono float planar.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    first = int(round((start or 0.0) * SAMPLE_RATE))
    last = len(audio) if end is None else int(round(end * SAMPLE_RATE))
    return audio[first:last], SAMPLE_RATE


def load_audio(path: str | Path, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Load ``path`` (optionally the ``[start, end)`` seconds of it) as 16 kHz mono float32.

    Raises :class:`DataError` with the file name when the file is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path} (check the path, or the manifest's folder)")
    try:
        audio, sr = _read_soundfile(path, start, end)
    except DataError:
        raise
    except Exception:
        try:
            audio, sr = _read_pyav(path, start, end)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"cannot decode audio file {path}: {type(exc).__name__}: {exc}") from exc
    if sr != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    if audio.size == 0:
        raise DataError(f"audio file is empty: {path}")
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds, read from the header when possible (no full decode)."""
    path = Path(path)
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.frames > 0:
            return info.frames / info.samplerate
    except Exception:
        pass
    return len(load_audio(path)) / SAMPLE_RATE


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM wav atomically (temp file, then rename)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)

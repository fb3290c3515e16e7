"""Decode audio files to what Whisper wants: 16 kHz mono float32 in [-1, 1].

soundfile (libsndfile) decodes wav/flac/ogg/mp3 quickly; anything it cannot read (m4a/aac, odd
containers) falls back to PyAV, which faster-whisper already depends on. Resampling uses soxr.
We never go through ``datasets.Audio`` (it needs torchcodec, which does not load with CPU torch):
encoded bytes (e.g. from a saved ``datasets`` dataset) are decoded here from memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_ft.errors import DataError

SAMPLE_RATE = 16_000  # Hz, Whisper's input rate
CHUNK_SECONDS = 30  # seconds of audio in one Whisper input window
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4")

AudioSource = str | Path | bytes | bytearray | memoryview


class AudioMissingError(DataError):
    """The audio file does not exist."""


class AudioEmptyError(DataError):
    """The audio decodes to zero samples (or the file has zero bytes)."""


class AudioDecodeError(DataError):
    """Neither soundfile nor PyAV can decode the audio."""


@dataclass(frozen=True)
class AudioInfo:
    """What a header probe tells about an audio file."""

    duration: float  # seconds
    sample_rate: int
    channels: int


def _describe(source: AudioSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"<{len(source)} bytes of audio>"


def _open_target(source: AudioSource):
    # soundfile and PyAV both read file names or seekable file objects.
    return str(source) if isinstance(source, (str, Path)) else io.BytesIO(bytes(source))


def _read_soundfile(source: AudioSource, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(_open_target(source)) as f:
        sr = f.samplerate
        first = int(round((start or 0.0) * sr))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        if first > 0:
            f.seek(min(first, f.frames))
        data = f.read(frames=max(0, last - first), dtype="float32", always_2d=True)
    return data.mean(axis=1), sr


def _read_pyav(source: AudioSource, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(_open_target(source), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{_describe(source)}: no audio stream")
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


def load_audio(source: AudioSource, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Load a file (or encoded bytes), optionally its ``[start, end)`` seconds, as 16 kHz mono float32.

    Raises a :class:`DataError` subclass naming the file when it is missing
    (:class:`AudioMissingError`), empty (:class:`AudioEmptyError`) or undecodable
    (:class:`AudioDecodeError`).
    """
    name = _describe(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioMissingError(f"audio file not found: {path} (check the path, or the manifest's folder)")
        if path.stat().st_size == 0:
            raise AudioEmptyError(f"audio file is empty (0 bytes): {path}")
        source = path
    elif len(source) == 0:
        raise AudioEmptyError("audio bytes are empty")
    try:
        audio, sr = _read_soundfile(source, start, end)
    except Exception:
        try:
            audio, sr = _read_pyav(source, start, end)
        except DataError:
            raise
        except Exception as exc:
            raise AudioDecodeError(f"cannot decode audio {name}: {type(exc).__name__}: {exc}") from exc
    if audio.size and sr != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    if audio.size == 0:
        raise AudioEmptyError(f"audio is empty (no samples): {name}")
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_info(path: str | Path) -> AudioInfo:
    """Duration, rate and channels, from the header when soundfile can read it (no full decode).

    Falls back to decoding (PyAV) for formats libsndfile does not know; raises like :func:`load_audio`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioMissingError(f"audio file not found: {path} (check the path, or the manifest's folder)")
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels)
    except Exception:
        pass
    # Header said nothing useful (or no header): decode; this raises Missing/Empty/Decode errors.
    return AudioInfo(len(load_audio(path)) / SAMPLE_RATE, SAMPLE_RATE, 1)


def slice_problem(start: float | None, end: float | None, total: float) -> str | None:
    """Why the ``[start, end)`` seconds of a ``total``-second file hold no audio, or None when they do.

    An end past the file's end is not a problem: reading clips it (Kaldi segments often overrun).
    """
    first = start or 0.0
    shown = f"{first:.2f}..{'end' if end is None else f'{end:.2f}'} s"
    if first < 0 or (end is not None and end <= first):
        return f"slice ends before it starts ({shown})"
    if first >= total:
        return f"slice outside the file ({shown}, file is {total:.2f} s)"
    return None


def audio_duration(path: str | Path) -> float:
    """Duration in seconds, read from the header when possible (no full decode)."""
    return audio_info(path).duration


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM wav atomically (temp file, then rename)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

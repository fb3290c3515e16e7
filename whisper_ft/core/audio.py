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

from whisper_ft.core.errors import DataError

SAMPLE_RATE = 16_000  # Hz, Whisper's input rate
CHUNK_SECONDS = 30  # seconds of audio in one Whisper input window
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4")

AudioSource = str | Path | bytes | bytearray | memoryview
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000  # Hz; outside: a corrupt or hostile header
MAX_PEAK = 2.0  # float samples beyond this are scaled back to full scale
_BLOCK_SECONDS = 60  # decode-and-resample block of load_audio


class AudioMissingError(DataError):
    """The audio file does not exist."""


class AudioEmptyError(DataError):
    """The audio decodes to zero samples (or the file has zero bytes)."""


class AudioDecodeError(DataError):
    """Neither soundfile nor PyAV can decode the audio."""


class AudioHeaderError(AudioDecodeError):
    """The header declares something no real recording has (e.g. a 1 Hz sample rate)."""

    def __init__(self, message: str, *, rate: int):
        super().__init__(message)
        self.rate = rate


class AudioInvalidError(AudioDecodeError):
    """The samples decode but are not audio (NaN or infinity)."""


class AudioTooLongError(DataError):
    """Longer than the caller's limit (found from the header, or while decoding)."""

    def __init__(self, message: str, *, seconds: float, limit: float):
        super().__init__(message)
        self.seconds, self.limit = seconds, limit


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


def _read_soundfile(source: AudioSource, start: float | None, end: float | None,
                    max_seconds: float | None) -> np.ndarray:
    """Block by block, mixed to mono and resampled as it is read: memory holds the 16 kHz result
    and one block, never the file at its own rate and channel count (an hour of 48 kHz stereo
    float is 1.4 GB)."""
    import soundfile as sf
    import soxr

    with sf.SoundFile(_open_target(source)) as f:
        sr = f.samplerate
        check_sample_rate(sr, source)
        first = int(round((start or 0.0) * sr))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        check_duration(max(0, last - first) / sr, max_seconds, source)
        if first > 0:
            f.seek(min(first, f.frames))
        left = max(0, last - first)
        stream = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32") if sr != SAMPLE_RATE else None
        out = _Growing(int(np.ceil(left * SAMPLE_RATE / sr)) + 16)
        while left > 0:
            block = f.read(frames=min(left, _BLOCK_SECONDS * sr), dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            left -= len(block)
            mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            out.append(stream.resample_chunk(mono, last=left <= 0) if stream is not None else mono)
        if stream is not None and left > 0:  # the file ended before its header said: flush the resampler
            out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return out.array()


class _Growing:
    """A float32 buffer filled in place (no second copy of a long file at the end)."""

    def __init__(self, capacity: int):
        self.data, self.size = np.empty(max(capacity, 1), np.float32), 0

    def append(self, x: np.ndarray) -> None:
        if self.size + len(x) > len(self.data):
            self.data = np.resize(self.data, max(2 * len(self.data), self.size + len(x)))
        self.data[self.size:self.size + len(x)] = x
        self.size += len(x)

    def array(self) -> np.ndarray:
        return self.data[:self.size]


def _read_pyav(source: AudioSource, start: float | None, end: float | None, max_seconds: float | None) -> np.ndarray:
    import av

    chunks, samples = [], 0
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE) + SAMPLE_RATE
    with av.open(_open_target(source), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{_describe(source)}: no audio stream")
        rate = container.streams.audio[0].rate
        if rate:
            check_sample_rate(rate, source)
        # Let PyAV resample straight to our rate: mono float planar.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                samples += chunks[-1].size
            if limit is not None and samples > limit:  # no trustworthy header: stop at the limit
                check_duration(samples / SAMPLE_RATE, max_seconds, source)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    first = int(round((start or 0.0) * SAMPLE_RATE))
    last = len(audio) if end is None else int(round(end * SAMPLE_RATE))
    return audio[first:last]


def check_sample_rate(rate: int, source: AudioSource | str = "audio") -> None:
    """A sample rate no real recording has is a corrupt or hostile header (a 100 KB wav declaring
    1 Hz claims 14 hours of audio)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioHeaderError(f"{_describe(source)} declares a sample rate of {rate} Hz, outside "
                               f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz: the file is corrupt (re-encode it)", rate=rate)


def check_duration(seconds: float, max_seconds: float | None, source: AudioSource | str = "audio") -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise AudioTooLongError(f"{_describe(source)} is {seconds:.0f} s long, over the limit of {max_seconds:.0f} s "
                                "(split it, or raise the limit)", seconds=seconds, limit=max_seconds)


def _sanitize(audio: np.ndarray, name: str) -> np.ndarray:
    """Refuse non-finite samples (NaN/inf make Whisper write garbage for minutes) and bring absurd
    amplitudes (float files far beyond full scale) back to a peak of 1."""
    peak = max(float(audio.max()), -float(audio.min())) if audio.size else 0.0  # no |audio| copy of a long file
    if not np.isfinite(peak):
        raise AudioInvalidError(f"audio {name} holds non-finite samples (NaN or infinity): the file is corrupt")
    if peak > MAX_PEAK:
        audio /= np.float32(peak)
    return audio


def load_audio(source: AudioSource, start: float | None = None, end: float | None = None, *,
               max_seconds: float | None = None) -> np.ndarray:
    """Load a file (or encoded bytes), optionally its ``[start, end)`` seconds, as 16 kHz mono float32.

    Raises a :class:`DataError` subclass naming the file when it is missing
    (:class:`AudioMissingError`), empty (:class:`AudioEmptyError`), undecodable
    (:class:`AudioDecodeError`), declares an impossible sample rate (:class:`AudioHeaderError`),
    holds NaN/inf samples (:class:`AudioInvalidError`) or is longer than ``max_seconds``
    (:class:`AudioTooLongError`, found from the header or while decoding, never after decoding it all).
    Samples far beyond full scale (peak over 2) are scaled to a peak of 1.
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
        audio = _read_soundfile(source, start, end, max_seconds)
    except DataError:
        raise
    except Exception:
        try:
            audio = _read_pyav(source, start, end, max_seconds)
        except DataError:
            raise
        except Exception as exc:
            raise AudioDecodeError(f"cannot decode audio {name}: {type(exc).__name__}: {exc}") from exc
    if audio.size == 0:
        raise AudioEmptyError(f"audio is empty (no samples): {name}")
    return np.ascontiguousarray(_sanitize(audio, name), dtype=np.float32)


def _soundfile_header(path: Path):
    """libsndfile's header of ``path`` (its rate checked), or None when it cannot tell the length."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
    except Exception:
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        return None
    check_sample_rate(info.samplerate, path)
    return info


def probe_audio(path: str | Path) -> AudioInfo | None:
    """What the file's header says (soundfile, else the container's stream via PyAV), without
    decoding; None when no header tells the length (e.g. a browser's webm recording). Raises
    :class:`AudioHeaderError` for an impossible sample rate."""
    path = Path(path)
    info = _soundfile_header(path)
    if info is not None:
        return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels)
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.rate:
                check_sample_rate(stream.rate, path)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000  # av.time_base: microseconds
            else:
                return None
            return AudioInfo(seconds, stream.rate or SAMPLE_RATE, stream.channels or 1)
    except DataError:
        raise
    except Exception:
        return None


def audio_info(path: str | Path) -> AudioInfo:
    """Duration, rate and channels, from the header when soundfile can read it (no full decode;
    float files are scanned for NaN/inf, which only they can hold).

    Falls back to decoding (PyAV) for formats libsndfile does not know; raises like :func:`load_audio`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioMissingError(f"audio file not found: {path} (check the path, or the manifest's folder)")
    info = _soundfile_header(path)
    if info is not None:
        if info.subtype in ("FLOAT", "DOUBLE"):  # only float files can hold NaN/inf: scan those
            _check_finite_file(path, info.samplerate)
        return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels)
    # Header said nothing useful (or no header): decode; this raises Missing/Empty/Decode errors.
    return AudioInfo(len(load_audio(path)) / SAMPLE_RATE, SAMPLE_RATE, 1)


def _check_finite_file(path: Path, rate: int) -> None:
    import soundfile as sf

    for block in sf.blocks(str(path), blocksize=_BLOCK_SECONDS * rate, dtype="float32", always_2d=True):
        if not np.isfinite(block).all():
            raise AudioInvalidError(f"audio {path} holds non-finite samples (NaN or infinity): the file is corrupt")


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

"""whisper_ft.core.audio: any rate / channel count / format -> 16 kHz mono float32; bad files -> DataError."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import make_tone
from whisper_ft.core.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    AudioEmptyError,
    AudioMissingError,
    audio_duration,
    audio_info,
    load_audio,
    write_wav,
)
from whisper_ft.core.errors import DataError


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


def check_tone(audio: np.ndarray, seconds: float, tolerance: float = 0.01) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - seconds) <= tolerance, len(audio) / SAMPLE_RATE
    assert abs(dominant_hz(audio) - 440.0) < 5.0  # the tone survived resampling and downmixing
    assert 0.2 < float(np.abs(audio).max()) < 0.5


@pytest.mark.parametrize(("sr", "channels"), [(16_000, 1), (8_000, 1), (22_050, 2), (44_100, 1), (48_000, 6)])
def test_wav_any_rate_and_channels(make_wav, sr, channels):
    path = make_wav(f"tone_{sr}_{channels}.wav", 1.25, sr=sr, channels=channels)
    check_tone(load_audio(path), 1.25, tolerance=1e-3)
    assert audio_duration(path) == pytest.approx(1.25, abs=1e-3)
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (sr, channels)


@pytest.mark.parametrize(("fmt", "subtype", "suffix", "tolerance"), [
    ("FLAC", "PCM_16", ".flac", 1e-3),
    ("OGG", "VORBIS", ".ogg", 0.01),
    ("MP3", "MPEG_LAYER_III", ".mp3", 0.08),  # encoder padding
])
def test_compressed_formats(tmp_path, fmt, subtype, suffix, tolerance):
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    path = tmp_path / f"tone{suffix}"
    sf.write(str(path), np.stack([make_tone(1.0, 44_100)] * 2, axis=1), 44_100, format=fmt, subtype=subtype)
    check_tone(load_audio(path), 1.0, tolerance)
    assert audio_duration(path) == pytest.approx(1.0, abs=tolerance)


def write_m4a(path, seconds: float, sr: int = 22_050) -> None:
    av = pytest.importorskip("av")
    tone = make_tone(seconds, sr)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_m4a_through_pyav(tmp_path):
    path = tmp_path / "tone.m4a"
    write_m4a(path, 1.0)
    with pytest.raises(RuntimeError):  # soundfile.LibsndfileError
        sf.info(str(path))  # libsndfile cannot: the PyAV fallback does the work
    audio = load_audio(path)
    check_tone(audio, 1.0, tolerance=0.1)  # AAC priming/padding
    assert audio_duration(path) == pytest.approx(len(audio) / SAMPLE_RATE)


def test_bytes_input_matches_file(make_wav, tmp_path):
    path = make_wav("b.wav", 0.8, sr=8_000, channels=2)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))
    m4a = tmp_path / "b.m4a"
    write_m4a(m4a, 0.6)
    np.testing.assert_allclose(load_audio(m4a.read_bytes()), load_audio(m4a), atol=1e-6)


def test_slice_start_end(make_wav):
    path = make_wav("s.wav", 2.0, sr=8_000)
    full = load_audio(path)
    part = load_audio(path, start=0.5, end=1.25)
    assert len(part) == int(0.75 * SAMPLE_RATE)
    offset = int(0.5 * SAMPLE_RATE)
    np.testing.assert_allclose(part[100:-100], full[offset + 100:offset + len(part) - 100], atol=0.02)


def test_missing_file(tmp_path):
    with pytest.raises(AudioMissingError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(DataError, match="nope.wav"):
        audio_duration(tmp_path / "nope.wav")


def test_empty_files(tmp_path):
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    with pytest.raises(AudioEmptyError, match="zero.wav"):
        load_audio(zero)
    header_only = tmp_path / "header.wav"
    sf.write(str(header_only), np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioEmptyError, match="header.wav"):
        load_audio(header_only)
    with pytest.raises(AudioEmptyError):
        audio_duration(header_only)
    with pytest.raises(AudioEmptyError):
        load_audio(b"")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage, not audio at all" * 10)
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        load_audio(bad)
    with pytest.raises(DataError, match="bad.wav"):
        audio_duration(bad)
    with pytest.raises(AudioDecodeError):
        load_audio(b"\x00\x01 definitely not audio" * 50)


def test_write_wav_roundtrip(tmp_path):
    tone = make_tone(0.5)
    out = tmp_path / "sub" / "w.wav"
    write_wav(out, tone)
    assert sorted(p.name for p in out.parent.iterdir()) == ["w.wav"]  # no temp file left
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(out), tone, atol=1e-4)


def _declared_rate(path, rate: int) -> None:
    import struct

    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)
    path.write_bytes(bytes(data))


def test_impossible_sample_rate_is_refused_from_the_header(make_wav):
    from whisper_ft.core.audio import AudioHeaderError, audio_info, load_audio, probe_audio

    path = make_wav("one-hertz.wav", 3.0, sr=8000)
    _declared_rate(path, 1)
    for read in (load_audio, audio_info, probe_audio):
        with pytest.raises(AudioHeaderError, match="sample rate of 1 Hz"):
            read(path)


def test_non_finite_samples_are_refused_and_absurd_ones_scaled(tmp_path):
    import soundfile as sf

    from whisper_ft.core.audio import AudioInvalidError, load_audio

    sf.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan, 0.2] * 1000, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioInvalidError, match="non-finite"):
        load_audio(tmp_path / "nan.wav")
    sf.write(str(tmp_path / "inf.wav"), np.array([0.1, np.inf] * 1000, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioInvalidError):
        load_audio(tmp_path / "inf.wav")
    loud = make_tone(1.0) * np.float32(1e30)
    sf.write(str(tmp_path / "loud.wav"), loud, 16000, subtype="FLOAT")
    out = load_audio(tmp_path / "loud.wav")
    assert np.isfinite(out).all() and np.abs(out).max() == pytest.approx(1.0)
    sf.write(str(tmp_path / "hot.wav"), make_tone(1.0) * np.float32(5.0), 16000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "hot.wav")).max() > 1.2  # a little over full scale is left alone


def test_block_decoding_equals_whole_file_resampling(tmp_path):
    """load_audio reads and resamples block by block (bounded memory): the result is the one-shot one."""
    import soundfile as sf
    import soxr

    from whisper_ft.core import audio as audio_mod

    rng = np.random.default_rng(0)
    stereo = (0.2 * rng.standard_normal((44_100 * 130, 2))).astype(np.float32)  # over two 60 s blocks
    sf.write(str(tmp_path / "s.wav"), stereo, 44_100, subtype="FLOAT")
    expected = soxr.resample(stereo.mean(axis=1), 44_100, 16_000).astype(np.float32)
    assert np.array_equal(audio_mod.load_audio(tmp_path / "s.wav"), expected)
    part = audio_mod.load_audio(tmp_path / "s.wav", 10.0, 75.5)
    assert len(part) == pytest.approx(65.5 * 16_000, abs=2)


def test_max_seconds_is_checked_before_and_while_decoding(tmp_path, make_wav):
    import av

    from whisper_ft.core.audio import AudioTooLongError, load_audio, probe_audio

    with pytest.raises(AudioTooLongError, match="over the limit of 5 s") as info:
        load_audio(make_wav("long.wav", 8.0), max_seconds=5)
    assert info.value.seconds == pytest.approx(8.0)
    assert len(load_audio(make_wav("ok.wav", 4.0), max_seconds=5)) == 64_000
    # a container whose header tells no length (what a browser's recorder sends): stopped while decoding
    path = tmp_path / "rec.webm"
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(make_tone(12.0, sr=48000)[None, :], format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    with pytest.raises(AudioTooLongError):
        load_audio(path, max_seconds=5)
    assert len(load_audio(path, max_seconds=20)) == pytest.approx(12.0 * 16_000, rel=0.01)
    info = probe_audio(path)
    assert info is None or info.duration == pytest.approx(12.0, abs=0.1)

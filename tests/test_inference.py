"""Transformers generation and transcription, infer/infer-ct2 commands, default model picking (tiny model)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import make_tone, run_cli
from whisper_ft.core.errors import WhisperFtError


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from whisper_ft.models.loading import load_whisper

    return load_whisper(tiny_model_dir)


def _features(loaded, audios):
    return loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features


@pytest.mark.slow
def test_generation_starts_from_prompt_and_groups_languages(tiny):
    from whisper_ft.decoding.hf import generate_token_ids

    feats = _features(tiny, [make_tone(1.0, seed=1), make_tone(2.0, freq=300, seed=2), make_tone(1.5, seed=3)])
    mixed = generate_token_ids(tiny.model, tiny.processor, feats, language=["zh", "en", "zh"], max_new_tokens=6)
    zh = generate_token_ids(tiny.model, tiny.processor, feats, language="zh", max_new_tokens=6)
    en = generate_token_ids(tiny.model, tiny.processor, feats, language="en", max_new_tokens=6)
    assert mixed == [zh[0], en[1], zh[2]]
    sot = tiny.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    for row in mixed:
        assert 0 < len(row) <= 6 and row[0] != sot  # no prompt in the result


@pytest.mark.slow
def test_generate_texts_with_peft_model_uses_the_adapter(tiny):
    import torch
    from peft import LoraConfig, get_peft_model

    from whisper_ft.decoding.hf import generate_texts, generate_token_ids
    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(tiny.hf_path)  # a fresh copy: peft modifies the model in place
    feats = _features(loaded, [make_tone(1.0)])
    plain = generate_token_ids(loaded.model, loaded.processor, feats, language="zh", max_new_tokens=8)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    # LoRA's B starts at zero: same output as the plain model
    assert generate_token_ids(peft_model, loaded.processor, feats, language="zh", max_new_tokens=8) == plain
    texts = generate_texts(peft_model, loaded.processor, feats, language="zh", max_new_tokens=8)
    assert len(texts) == 1 and isinstance(texts[0], str)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 5.0)
    changed = generate_token_ids(peft_model, loaded.processor, feats, language="zh", max_new_tokens=8)
    assert changed != plain


def test_unknown_language_and_task(tiny):
    from whisper_ft.decoding.hf import generate_texts

    feats = _features(tiny, [make_tone(1.0)])
    with pytest.raises(WhisperFtError, match="unknown language 'xx'.*yue"):
        generate_texts(tiny.model, tiny.processor, feats, language="xx")
    with pytest.raises(WhisperFtError, match="transcribe, translate"):
        generate_texts(tiny.model, tiny.processor, feats, task="summarize")


def test_segments_from_tokens(tiny):
    from whisper_ft.decoding.hf_transcribe import segments_from_tokens

    tok = tiny.processor.tokenizer
    ts = lambda t: tok.convert_tokens_to_ids(f"<|{t:.2f}|>")  # noqa: E731
    hello, world = tok.encode("hello", add_special_tokens=False), tok.encode(" world", add_special_tokens=False)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    tokens = [ts(0.0), *hello, ts(1.5), ts(1.5), *world, ts(3.2), eot]
    segs = segments_from_tokens(tokens, tok, time_offset=30.0)
    assert [(s.start, s.end, s.text) for s in segs] == [(30.0, 31.5, "hello"), (31.5, 33.2, "world")]


@pytest.mark.slow
def test_transcribe_hf_long_audio(tiny):
    """45 s of audio: sequential 30 s windows; timed segments with text, in order, inside the audio,
    and the second window decoded too (segments after 30 s)."""
    from whisper_ft.decoding.hf_transcribe import transcribe_hf

    audio = make_tone(45.0, freq=300)
    t = transcribe_hf(tiny.model, tiny.processor, audio, language="zh", temperature_fallback=False)
    assert t.language == "zh" and t.duration == pytest.approx(45.0)
    assert len(t.segments) >= 2 and all(s.text for s in t.segments) and t.text
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= 45.0 for s in t.segments)
    assert any(30.0 <= s.start < s.end for s in t.segments), [(s.start, s.end) for s in t.segments]


def test_detect_language_returns_a_code(tiny):
    from whisper_ft.core.languages import LANGUAGES
    from whisper_ft.decoding.hf_transcribe import detect_language_hf

    (code, prob), = detect_language_hf(tiny.model, tiny.processor, _features(tiny, [make_tone(1.0)]))
    assert code in LANGUAGES and 0 < prob <= 1


@pytest.mark.slow
def test_infer_cli_writes_files_and_reports_failures(tiny_model_dir, make_wav, tmp_path, capsys):
    good = make_wav("clips/a.wav", 2.0)
    bad = tmp_path / "clips" / "broken.wav"
    bad.write_bytes(b"not audio at all")
    code, out, err = run_cli(
        ["infer", "--audio_path", str(good), "--audio_path", str(bad), "--audio_path", str(tmp_path / "missing.wav"),
         "--model_path", str(tiny_model_dir), "--language", "zh", "--format", "srt", "--output_dir",
         str(tmp_path / "out"), "--cpu_threads", "1"],
        capsys,
    )
    assert code == 1
    assert (tmp_path / "out" / "a.srt").is_file()
    assert "failed: " in err and "missing.wav" in err and "broken.wav" in err
    assert "error: 2 of 3 inputs failed" in err


def test_infer_cli_unknown_language(tiny_model_dir, make_wav, capsys):
    code, _, err = run_cli(["infer", "--audio_path", str(make_wav("a.wav")), "--model_path", str(tiny_model_dir),
                             "--language", "elvish"], capsys)
    assert code == 1 and "unknown language 'elvish'" in err and " zh" in err


def test_infer_ct2_bare_picks_newest_ct2_model(tiny_ct2, make_wav, tmp_path, monkeypatch, capsys):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_ct2, models / "whisper-tiny-finetune-ct2")
    monkeypatch.chdir(tmp_path)
    wav = make_wav("speech.wav", 3.0)
    code, out, err = run_cli(["infer-ct2", str(wav), "--language", "zh", "--beam_size", "1", "--cpu_threads", "1"],
                              capsys)
    assert code == 0, err
    assert "using models/whisper-tiny-finetune-ct2 (newest CTranslate2 model under models/)" in err
    assert "cpu (int8)" in err  # automatic device and compute type on a machine without CUDA
    data = json.loads(out)
    assert list(data) == ["language", "duration", "segments", "text"] and data["duration"] == pytest.approx(3.0)


@pytest.mark.slow
def test_infer_ct2_folder_and_formats(tiny_ct2, make_wav, tmp_path, capsys):
    make_wav("in/a.wav", 1.0)
    make_wav("in/sub/b.wav", 35.0)  # longer than one window
    code, _, err = run_cli(["infer-ct2", str(tmp_path / "in"), "--model_path", str(tiny_ct2), "--language", "en",
                             "--beam_size", "1",
                             "--format", "vtt", "--output_dir", str(tmp_path / "out"), "--compute_type", "float32",
                             "--cpu_threads", "1"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.vtt", "b.vtt"]
    assert (tmp_path / "out" / "b.vtt").read_text().startswith("WEBVTT")


def _fake_hf_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_default_model_picking(tmp_path):
    from whisper_ft.models.defaults import latest_ct2_model, pick_ct2_model, pick_model

    models = tmp_path / "models"
    assert pick_model(models).name == "base" and pick_ct2_model(models).name == "base"
    old_run = models / "run1" / "best"
    old_run.mkdir(parents=True)
    (old_run / "adapter_config.json").write_text("{}")
    new_run = models / "run2" / "best"
    new_run.mkdir(parents=True)
    (new_run / "adapter_config.json").write_text("{}")
    now = time.time()
    os.utime(old_run, (now - 100, now - 100))
    os.utime(new_run, (now, now))
    assert pick_model(models).name == str(new_run)
    merged = _fake_hf_model(models / "whisper-base-finetune")
    os.utime(merged, (now - 1000, now - 1000))  # older, but merged models win
    assert pick_model(models).name == str(merged)
    ct2 = models / "whisper-base-finetune-ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"")
    assert latest_ct2_model(models) == ct2 and "newest CTranslate2" in pick_ct2_model(models).reason


@pytest.mark.slow
def test_infer_ct2_several_txt_transcripts_are_headed_and_output_dir_checked_first(tiny_ct2, make_wav, tmp_path,
                                                                                   capsys):
    a, b = make_wav("a.wav", 1.0), make_wav("sub/b.wav", 2.0, seed=1)
    common = ["--model_path", str(tiny_ct2), "--language", "en", "--beam_size", "1", "--compute_type", "float32",
              "--cpu_threads", "1"]
    code, out, err = run_cli(["infer-ct2", str(a), str(b), "--format", "txt", *common], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"==> {a} <==" and f"==> {b} <==" in lines
    assert lines[lines.index(f"==> {b} <==") - 1] == ""  # a blank line between transcripts, as head(1) does
    code, out, _ = run_cli(["infer-ct2", str(a), "--format", "txt", *common], capsys)
    assert code == 0 and "==>" not in out  # one input: the transcript alone

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for output_dir, message in [(a_file, "is a file, not a folder"), (a_file / "sub", "cannot write to --output_dir")]:
        code, out, err = run_cli(["infer-ct2", str(a), "--output_dir", str(output_dir), *common], capsys)
        assert code == 1 and out == "" and message in err, err
        assert "inputs failed" not in err and len(err.strip().splitlines()) == 2  # the model line + the error
    code, _, err = run_cli(["infer-ct2", str(a), str(tmp_path / "nope.wav"), *common], capsys)
    assert code == 1 and "error: 1 of 2 inputs failed" in err
    code, _, err = run_cli(["infer-ct2", str(tmp_path / "nope.wav"), *common], capsys)
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: ") and "nope.wav: audio file not found" in err
    assert "of 1 inputs" not in err


@pytest.mark.parametrize("option", ["--beam_size", "--batch_size", "--cpu_threads"])
def test_infer_ct2_counts_must_be_positive(option, make_wav, capsys):
    code, _, err = run_cli(["infer-ct2", str(make_wav("a.wav")), option, "0"], capsys)
    assert code == 2 and err.startswith("error: ") and option in err and len(err.strip().splitlines()) == 1


def _scripted(segments):
    """A transcribe function that reports fixed segments one by one (what run_inference shows)."""
    from whisper_ft.core.results import Segment, Transcription

    def transcribe(audio, path, on_segment):
        segs = [Segment(i, s, e, f"part {i}") for i, (s, e) in enumerate(segments)]
        for seg in segs:
            if on_segment is not None:
                on_segment(seg)
        return Transcription("en", len(audio) / 16_000, segs, source=path)

    return transcribe


def test_long_inputs_show_progress_and_suggest_vad(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from whisper_ft.workflows.inference import run_inference

    long_wav, short_wav = tmp_path / "lecture.wav", tmp_path / "short.wav"
    sf.write(str(long_wav), np.zeros(16_000 * 601, dtype=np.int16), 16_000, subtype="PCM_16")
    sf.write(str(short_wav), np.zeros(16_000 * 5, dtype=np.int16), 16_000, subtype="PCM_16")
    run = run_inference([long_wav, short_wav], _scripted([(0.0, 200.0), (200.0, 601.0)]), fmt="txt",
                        vad_hint=True)
    err = capsys.readouterr().err
    assert "lecture.wav" in err and "/601" in err  # a bar in seconds of audio for the long input
    assert "short.wav" not in err  # no bar, no hint for a short input
    assert f"hint: {long_wav} is 10 min long: --vad skips its silences" in err and f"hint: {short_wav}" not in err
    assert len(run.transcriptions) == 2
    run_inference([long_wav], _scripted([(0.0, 601.0)]), fmt="txt", vad_hint=False)
    assert "hint:" not in capsys.readouterr().err


def test_clip_to_speech_moves_cue_ends_back_onto_speech():
    """3 s utterances 5 minutes apart (what VAD + faster-whisper produced): a segment whose end
    overshoots into the next utterance, or lies in the silence, ends where its speech ends."""
    from whisper_ft.core.results import Segment
    from whisper_ft.decoding.speech import clip_to_speech

    speech = [(10.0, 13.4), (313.0, 316.2), (616.0, 619.5), (620.0, 620.6)]
    cases = [
        ((10.2, 313.3), (10.2, 13.4)),  # end 0.3 s into the next chunk: slack, clipped
        ((313.1, 400.0), (313.1, 316.2)),  # end in the silence: back to the chunk's end
        ((300.0, 315.0), (313.0, 315.0)),  # start in the silence: forward to the speech
        ((616.5, 620.6), (616.5, 620.6)),  # covers a short chunk entirely: kept
        ((10.0, 316.2), (10.0, 316.2)),  # really covers both chunks: left as it is
        ((11.0, 12.0), (11.0, 12.0)),  # inside speech: unchanged
        ((500.0, 510.0), (500.0, 510.0)),  # no speech at all: unchanged
    ]
    for (start, end), expected in cases:
        seg = clip_to_speech(Segment(0, start, end, "text"), speech)
        assert (seg.start, seg.end) == expected, (start, end)
        assert seg.text == "text"


def _speech_like(seconds: float, seed: int):
    """Vowel-like syllables (a 110 Hz pulse train through three formant resonators, 4 syllables a
    second): Silero VAD hears it as speech, where it ignores pure tones."""
    import numpy as np

    sr, syllable = 16_000, 4_000
    vowels = [(700, 1220, 2600), (300, 2300, 3000), (350, 800, 2400), (500, 1800, 2500)]
    n = int(seconds * sr)
    out = np.zeros(n)
    for k, start in enumerate(range(0, n, syllable)):
        m = min(syllable, n - start)
        y = np.zeros(m)
        y[::int(sr / (110 + 20 * np.sin(k + seed)))] = 1.0
        for f in vowels[(k + seed) % 4]:  # two-pole resonator per formant, via its impulse response
            r, th = np.exp(-np.pi * 80 / sr), 2 * np.pi * f / sr
            t = np.arange(600)
            y = np.convolve(y, (1 - r) * r ** t * np.sin(th * (t + 1)) / np.sin(th))[:m]
        out[start:start + m] = y * np.sin(np.pi * np.arange(m) / m)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def test_vad_transcription_clips_cue_ends_to_the_speech(tiny_ct2, monkeypatch):
    """Speech bursts a minute apart, found by the real Silero VAD; the model (replaced here: a random
    model's timestamps are noise) decodes the glued speech and, as Whisper often does, ends a segment
    0.3 s into the next burst or in the padding after the last one. Mapped back to the file, such a
    segment spanned the minute of silence; now each cue ends where its speech ends."""
    import numpy as np
    from faster_whisper.transcribe import Segment as FwSegment

    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.decoding.ct2_transcribe import transcribe_ct2
    from whisper_ft.decoding.speech import chunk_seconds, speech_chunks

    rng = np.random.default_rng(0)
    silence = lambda s: (0.001 * rng.standard_normal(int(s * 16_000))).astype(np.float32)  # noqa: E731
    audio = np.concatenate([silence(2), _speech_like(3, 0), silence(60), _speech_like(3, 1), silence(60),
                            _speech_like(3, 2)])
    speech = chunk_seconds(speech_chunks(audio))
    assert len(speech) == 3 and speech[1][0] > 60 and speech[2][0] > 120  # the VAD finds the three bursts
    lengths = [e - s for s, e in speech]
    glued = np.cumsum([0.0, *lengths])  # where each burst starts in the glued audio
    ct2 = load_ct2_whisper(tiny_ct2, compute_type="float32", cpu_threads=1)
    seen = {}

    def decode_glued(audio_in, **kwargs):
        seen["seconds"], seen["vad_filter"] = len(audio_in) / 16_000, kwargs["vad_filter"]
        times = [(0.0, glued[1] + 0.3), (glued[1] + 0.3, glued[2] - 0.5), (glued[2], glued[3])]
        segs = (FwSegment(i, 0, s, e, f" part {i}", [], -0.1, 1.0, 0.0, None, 0.0) for i, (s, e) in enumerate(times))
        return segs, type("Info", (), {"language": "en", "language_probability": 1.0, "duration": glued[3]})()

    monkeypatch.setattr(ct2.model, "transcribe", decode_glued)
    progress = []
    t = transcribe_ct2(ct2, audio, language="en", beam_size=1, vad=True, on_segment=progress.append)
    assert seen == {"seconds": pytest.approx(glued[3], abs=0.01), "vad_filter": False}  # speech only, once
    got = [(round(s.start, 2), round(s.end, 2)) for s in t.segments]
    # glued: part 0 ran 0.3 s into burst 2 (in the file: 60 s later) -> ends with burst 1
    want = [(speech[0][0], speech[0][1]), (speech[1][0] + 0.3, speech[1][1] - 0.5), (speech[2][0], speech[2][1])]
    assert got == [(round(a, 2), round(b, 2)) for a, b in want], (got, speech)
    assert [s.text for s in t.segments] == ["part 0", "part 1", "part 2"] and progress == t.segments
    assert t.duration == pytest.approx(len(audio) / 16_000)


@pytest.mark.slow
def test_infer_ct2_long_recordings_use_the_batched_pipeline_by_default(tiny_ct2, make_wav, monkeypatch, capsys):
    """Without --batch_size, a recording of AUTO_BATCH_FROM_SECONDS or more goes through the
    batched VAD pipeline (faster on long files: README, benchmarks/inference.py --long) and says
    so; shorter ones and an explicit --batch_size 1 decode sequentially."""
    import whisper_ft.decoding.ct2 as ct2_module
    import whisper_ft.decoding.ct2_transcribe as long_form

    assert ct2_module.default_batch_size(ct2_module.AUTO_BATCH_FROM_SECONDS) == ct2_module.AUTO_BATCH_SIZE > 1
    assert ct2_module.default_batch_size(ct2_module.AUTO_BATCH_FROM_SECONDS - 1) == 1
    real = long_form.transcribe_ct2
    used: list[int] = []

    def spy(*args, **kwargs):
        used.append(kwargs["batch_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(long_form, "transcribe_ct2", spy)
    monkeypatch.setattr(ct2_module, "AUTO_BATCH_FROM_SECONDS", 2.0)  # the tiny test files stand for long ones
    short, long = make_wav("short.wav", 1.0), make_wav("long.wav", 3.0, seed=1)
    common = ["--model_path", str(tiny_ct2), "--language", "en", "--beam_size", "1", "--compute_type", "float32",
              "--cpu_threads", "1", "--format", "txt"]
    code, _, err = run_cli(["infer-ct2", str(short), str(long), *common], capsys)
    assert code == 0, err
    assert used == [1, ct2_module.AUTO_BATCH_SIZE]
    assert f"{long}: 0 min: faster-whisper's batched VAD pipeline, batch {ct2_module.AUTO_BATCH_SIZE}" in err
    assert str(short) + ":" not in err
    used.clear()
    code, _, err = run_cli(["infer-ct2", str(long), "--batch_size", "1", *common], capsys)
    assert code == 0 and used == [1] and "batched VAD pipeline" not in err

"""Transformers generation and transcription, infer/infer-ct2 commands, default model picking (tiny model)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import make_tone
from whisper_ft.errors import WhisperFtError


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from whisper_ft.models.loading import load_whisper

    return load_whisper(tiny_model_dir)


def _features(loaded, audios):
    return loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features


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


def test_transcribe_hf_long_audio(tiny):
    """45 s of audio: sequential 30 s windows; segments inside the audio, in order."""
    from whisper_ft.decoding.hf_transcribe import transcribe_hf

    audio = make_tone(45.0, freq=300)
    t = transcribe_hf(tiny.model, tiny.processor, audio, language="zh")
    assert t.language == "zh" and t.duration == pytest.approx(45.0)
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= 45.0 for s in t.segments)


def test_detect_language_returns_a_code(tiny):
    from whisper_ft.decoding.hf_transcribe import detect_language_hf
    from whisper_ft.models.languages import LANGUAGES

    (code, prob), = detect_language_hf(tiny.model, tiny.processor, _features(tiny, [make_tone(1.0)]))
    assert code in LANGUAGES and 0 < prob <= 1


def _run_cli(args, capsys):
    from whisper_ft.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_infer_cli_writes_files_and_reports_failures(tiny_model_dir, make_wav, tmp_path, capsys):
    good = make_wav("clips/a.wav", 2.0)
    bad = tmp_path / "clips" / "broken.wav"
    bad.write_bytes(b"not audio at all")
    code, out, err = _run_cli(
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
    code, _, err = _run_cli(["infer", "--audio_path", str(make_wav("a.wav")), "--model_path", str(tiny_model_dir),
                             "--language", "elvish"], capsys)
    assert code == 1 and "unknown language 'elvish'" in err and " zh" in err


@pytest.fixture(scope="module")
def tiny_ct2(tiny_model_dir, tmp_path_factory):
    from whisper_ft.convert import convert_model

    return convert_model(tiny_model_dir, tmp_path_factory.mktemp("ct2") / "tiny-ct2", quantization="float32").output_dir


def test_infer_ct2_bare_picks_newest_ct2_model(tiny_ct2, make_wav, tmp_path, monkeypatch, capsys):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_ct2, models / "whisper-tiny-finetune-ct2")
    monkeypatch.chdir(tmp_path)
    wav = make_wav("speech.wav", 3.0)
    code, out, err = _run_cli(["infer-ct2", str(wav), "--language", "zh", "--beam_size", "1", "--cpu_threads", "1"],
                              capsys)
    assert code == 0, err
    assert "using models/whisper-tiny-finetune-ct2 (newest CTranslate2 model under models/)" in err
    assert "cpu (int8)" in err  # automatic device and compute type on a machine without CUDA
    data = json.loads(out)
    assert list(data) == ["language", "duration", "segments", "text"] and data["duration"] == pytest.approx(3.0)


def test_infer_ct2_folder_and_formats(tiny_ct2, make_wav, tmp_path, capsys):
    make_wav("in/a.wav", 1.0)
    make_wav("in/sub/b.wav", 35.0)  # longer than one window
    code, _, err = _run_cli(["infer-ct2", str(tmp_path / "in"), "--model_path", str(tiny_ct2), "--language", "en",
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

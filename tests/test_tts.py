"""`whisper-ft prepare tts` (espeak-ng), the train/test sentence split, and the HSK sentence loader."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import run_cli
from whisper_ft.core.errors import DataError
from whisper_ft.data import tts as tts_mod
from whisper_ft.data.common import PrepareOptions
from whisper_ft.data.hsk import load_hsk, write_text
from whisper_ft.data.tts import BinaryEngine, LibraryEngine, Variant, prepare_tts, split_sentences, synthesize


@pytest.fixture
def engine():
    """The speech engine the tests use. It comes with the `dev` extra (espeakng-loader), so it is
    missing only on a machine set up by hand: skipped there, a failure in CI (never a silent skip)."""
    try:
        return tts_mod.find_engine()
    except DataError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI must run the speech tests: {exc}")
        pytest.skip(str(exc))


def no_library(monkeypatch) -> None:
    """As if espeakng-loader were not installed."""
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(tts_mod.LibraryEngine, "_instance", None)


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_split_sentences_shares_nothing():
    lines = [f"第{i}句话。" for i in range(20)] + ["第3句话！", " 第3句话 ", "Hello, World.", "hello world"]
    train, test = split_sentences(lines, test_fraction=0.25, seed=1)
    assert len(train) + len(test) == 21  # 20 + one English; punctuation/space/case variants merged
    assert len(test) == 5 and not set(train) & set(test)
    assert "第3句话。" in train + test and "第3句话！" not in train + test  # first spelling kept
    assert split_sentences(lines, 0.25, seed=1) == (train, test)  # deterministic
    assert split_sentences(lines, 0.25, seed=2) != (train, test)
    assert [len(part) for part in split_sentences(["a", "b"], 0.01)] == [1, 1]  # a tiny fraction still gets one
    assert split_sentences(["only"], 0.5) == (["only"], [])
    assert split_sentences(lines, 0.0)[1] == []
    with pytest.raises(DataError, match="--test_fraction"):
        split_sentences(lines, 1.0)


def test_missing_engine_is_one_clear_line(tmp_path, capsys, monkeypatch):
    no_library(monkeypatch)
    monkeypatch.setattr(tts_mod.shutil, "which", lambda name: None)
    (tmp_path / "t.txt").write_text("你好\n", encoding="utf-8")
    with pytest.raises(DataError, match="pip install espeakng-loader"):
        prepare_tts(tmp_path / "t.txt", "zh", tmp_path / "out")
    code, out, err = run_cli(["prepare", "tts", "--text", str(tmp_path / "t.txt"), "--language", "zh",
                              "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: no espeak-ng speech engine (espeakng-loader is not installed; espeak-ng is not "
                          "on PATH): pip install espeakng-loader")
    assert "sudo apt-get install espeak-ng" in err
    assert not (tmp_path / "out").exists()


def test_engine_choice(tmp_path, monkeypatch):
    """The pip library first; the espeak-ng program when the library is missing or asked for."""
    program = tmp_path / "espeak-ng"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(tts_mod.shutil, "which", lambda name: str(program) if name == "espeak-ng" else None)
    pytest.importorskip("espeakng_loader")
    assert isinstance(tts_mod.find_engine(), LibraryEngine)
    monkeypatch.setenv(tts_mod.ENGINE_ENV, "binary")
    chosen = tts_mod.find_engine()
    assert isinstance(chosen, BinaryEngine) and chosen.path == str(program)
    monkeypatch.setenv(tts_mod.ENGINE_ENV, "festival")
    with pytest.raises(DataError, match="WHISPER_FT_TTS_ENGINE='festival': use one of library, binary"):
        tts_mod.find_engine()
    monkeypatch.delenv(tts_mod.ENGINE_ENV)
    no_library(monkeypatch)
    assert isinstance(tts_mod.find_engine(), BinaryEngine)
    monkeypatch.setenv(tts_mod.ENGINE_ENV, "library")
    with pytest.raises(DataError, match=r"\(espeakng-loader is not installed\): pip install espeakng-loader"):
        tts_mod.find_engine()


def test_synthesize_speeds_and_pitches(engine):
    slow = synthesize("今天天气很好", Variant("cmn", 100, 50))
    fast = synthesize("今天天气很好", Variant("cmn", 300, 50))
    high = synthesize("今天天气很好", Variant("cmn", 100, 90))
    for audio in (slow, fast, high):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert float(np.sqrt(np.mean(audio**2))) > 0.01  # speech, not silence
    assert len(slow) > 1.5 * len(fast)
    assert not np.allclose(slow[: len(high)], high[: len(slow)])


def test_library_engine_speaks_mandarin_and_english():
    """libespeak-ng from the wheel: 22050 Hz from the library, 16 kHz out; the Mandarin voice reads
    the characters (pinyin phonemes), not English-spelled pinyin as Debian 12's espeak-ng does."""
    pytest.importorskip("espeakng_loader")
    lib = LibraryEngine.get()
    assert lib.sample_rate == 22050 and lib.has_voice("cmn") and lib.has_voice("cmn+f3")
    assert not lib.has_voice("xx-nope")
    zh = lib.synthesize("今天天气很好", Variant("cmn", 175, 50))
    en = lib.synthesize("The weather is nice today.", Variant("en", 175, 50))
    for audio, seconds in ((zh, (1.0, 3.0)), (en, (1.0, 3.0))):
        assert audio.dtype == np.float32 and seconds[0] < len(audio) / 16_000 < seconds[1]
        assert float(np.sqrt(np.mean(audio**2))) > 0.02
    again = lib.synthesize("今天天气很好", Variant("cmn", 175, 50))
    assert abs(len(again) - len(zh)) < 160  # the synthesiser keeps a little state between clips: within 10 ms
    with pytest.raises(DataError, match="no voice 'xx-nope'"):
        lib.synthesize("x", Variant("xx-nope", 175, 50))


def test_program_and_library_agree_on_english():
    """Both engines speak with the same scales: same sample rate and duration (English; Debian's
    Mandarin differs, see test_library_engine_speaks_mandarin_and_english)."""
    pytest.importorskip("espeakng_loader")
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program (the fallback engine) is not installed")
    program, lib = BinaryEngine(shutil.which("espeak-ng")), LibraryEngine.get()
    for variant in (Variant("en", 160, 30), Variant("en", 100, 90)):
        a = lib.synthesize("The weather is nice today, let us go for a walk in the park.", variant)
        b = program.synthesize("The weather is nice today, let us go for a walk in the park.", variant)
        assert a.dtype == b.dtype == np.float32
        assert len(a) == pytest.approx(len(b), rel=0.02)


def test_prepare_tts(tmp_path, engine):
    text = tmp_path / "zh.txt"
    text.write_text("今天天气很好。\n我们去公园散步吧！\n你叫什么名字？\n今天天气很好\n\n", encoding="utf-8")
    out = tmp_path / "tts"
    report = prepare_tts(text, "zh", out, speeds=[130, 220], pitches=[40], test_fraction=0.34,
                         options=PrepareOptions(num_workers=2))
    train, test = lines_of(out / "train.jsonl"), lines_of(out / "test.jsonl")
    assert (len(train), len(test)) == (4, 2)  # 3 unique sentences x 2 speeds
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in test}
    assert {r["tts"]["speed"] for r in train} == {130, 220} and {r["language"] for r in train} == {"zh"}
    assert {r["tts"]["engine"] for r in train} == {engine.kind}
    for r in train + test:
        info = sf.info(str(out / r["audio"]["path"]))
        assert (info.samplerate, info.channels) == (16_000, 1)
        assert r["duration"] == pytest.approx(info.frames / 16_000, abs=1e-3) and r["duration"] > 0.5
    by_speed = {r["tts"]["speed"]: r["duration"] for r in test}
    assert by_speed[130] > by_speed[220]
    assert report.work["variants_per_sentence"] == 2 and report.skipped == []
    # A re-run reuses every clip; different options keep the clips that still apply.
    report = prepare_tts(text, "zh", out, speeds=[130, 220], pitches=[40], test_fraction=0.34)
    assert report.work["wav_reused"] == 6
    report = prepare_tts(text, "zh", out, speeds=[130], pitches=[40, 60])
    assert report.work["wav_reused"] == 3 and report.splits["train"].utterances == 6


def test_prepare_tts_english_cli_and_bad_voice(tmp_path, capsys, engine):
    text = tmp_path / "en.txt"
    text.write_text("The weather is nice today.\nLet us go for a walk in the park.\n", encoding="utf-8")
    code, out, err = run_cli(["prepare", "tts", "--text", str(text), "--language", "en", "--speeds", "160",
                              "--pitches", "30,70", "--output_dir", str(tmp_path / "en"), "--num_workers", "2"],
                             capsys)
    assert code == 0, err
    assert "train" in out and "variants per sentence: 2" in out
    records = lines_of(tmp_path / "en" / "train.jsonl")
    assert len(records) == 4 and {r["tts"]["voice"] for r in records} == {"en"}
    code, out, err = run_cli(["prepare", "tts", "--text", str(text), "--language", "en", "--voices", "xx-nope",
                              "--output_dir", str(tmp_path / "bad")], capsys)
    assert code == 1 and "no voice 'xx-nope'" in err and err.count("\n") == 1
    code, out, err = run_cli(["prepare", "tts", "--text", str(text), "--language", "en", "--speeds", "fast"],
                             capsys)
    assert code == 1 and "--speeds takes comma-separated integers" in err
    code, out, err = run_cli(["prepare", "tts", "--text", str(text), "--language", "en", "--pitches", "120"],
                             capsys)
    assert code == 1 and "pitch is 0-99" in err


# --- HSK sentences ------------------------------------------------------------------------------

RECORDS = [
    {"id": "hsk1-0001", "hsk_level": 1, "topic": "greetings", "sentence_type": "statement", "chinese": "老师，您好！",
     "pinyin": "lǎo shī nín hǎo", "translation": {"en": "Hello, teacher!"}, "audio": {"normal": "a.mp3"}},
    {"id": "hsk2-0001", "hsk_level": 2, "topic": "food", "chinese": "我想吃米饭。", "pinyin": "wǒ xiǎng chī mǐ fàn",
     "translation": {"en": "I want to eat rice."}},
    {"id": "hsk3-0001", "hsk_level": 3, "topic": "time", "chinese": "  ", "translation": {}},
]


def test_hsk_from_wheel_and_json(tmp_path):
    wheel = tmp_path / "hsk_sentences_audio-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hsk_sentences_audio/data/sentences.json", json.dumps(RECORDS, ensure_ascii=False))
    sentences = load_hsk(wheel)
    assert [s.text for s in sentences] == ["老师，您好！", "我想吃米饭。"]  # blank text dropped
    assert sentences[1].english == "I want to eat rice." and sentences[1].level == 2
    (tmp_path / "sentences.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    assert [s.id for s in load_hsk(tmp_path / "sentences.json", levels={2})] == ["hsk2-0001"]
    out = write_text(sentences, tmp_path / "text" / "hsk.txt")
    assert out.read_text(encoding="utf-8") == "老师，您好！\n我想吃米饭。\n"
    with pytest.raises(DataError, match="not hsk-sentences-audio's wheel"):
        load_hsk(out)
    with pytest.raises(DataError, match="not found"):
        load_hsk(tmp_path / "nope.whl")


def test_hsk_installed_package():
    pytest.importorskip("hsk_sentences_audio")
    sentences = load_hsk()
    assert len(sentences) > 4000 and {s.level for s in sentences} >= {1, 2, 3}

"""whisper_ft.core.manifest: round-trip, relative paths, validation errors with line numbers."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from whisper_ft.core.errors import DataError
from whisper_ft.core.manifest import TimedSentence, Utterance, read_manifest, validate_manifest, write_manifest


def test_round_trip_keeps_every_field(tmp_path, make_wav):
    wav = make_wav("data/wav/a.wav", 2.0)
    utts = [
        Utterance(str(wav), "甚至出现交易几乎停滞的情况", 2.0, id="BAC009S0764W0121", language="zh"),
        Utterance(str(wav), "hello world", 1.2, start_time=0.5, end_time=1.7,
                  sentences=[TimedSentence(0.0, 0.6, "hello"), TimedSentence(0.6, 1.2, "world")],
                  extra={"speaker": "S1"}),
    ]
    path = tmp_path / "data" / "train.jsonl"
    assert write_manifest(path, utts) == 2
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # an ordinary file, not mkstemp's 0600
    back = read_manifest(path)
    for a, b in zip(utts, back):
        assert (a.sentence, a.duration, a.start_time, a.end_time, a.sentences, a.language, a.id, a.extra) == \
               (b.sentence, b.duration, b.start_time, b.end_time, b.sentences, b.language, b.id, b.extra)
        assert b.audio_file.resolve() == wav.resolve()
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"audio": {"path": "wav/a.wav"}, "sentence": "甚至出现交易几乎停滞的情况", "language": "zh",
                     "duration": 2.0, "id": "BAC009S0764W0121"}
    assert "甚至" in path.read_text(encoding="utf-8")  # not \u-escaped
    second = json.loads(path.read_text(encoding="utf-8").splitlines()[1])
    assert second["audio"] == {"path": "wav/a.wav", "start_time": 0.5, "end_time": 1.7}
    assert second["speaker"] == "S1" and second["sentences"][1] == {"start": 0.6, "end": 1.2, "text": "world"}


def test_relative_paths_survive_moving_the_folder(tmp_path, make_wav):
    wav = make_wav("corpus/wav/x.wav", 1.0)
    write_manifest(tmp_path / "corpus" / "m.jsonl", [Utterance(str(wav), "x", 1.0)])
    shutil.move(tmp_path / "corpus", tmp_path / "moved")
    (utt,) = read_manifest(tmp_path / "moved" / "m.jsonl")
    assert utt.audio_file == tmp_path / "moved" / "wav" / "x.wav"
    assert len(utt.load_audio()) == 16_000


def test_absolute_paths_when_asked(tmp_path, make_wav):
    wav = make_wav("w.wav", 1.0)
    write_manifest(tmp_path / "out" / "m.jsonl", [Utterance(str(wav), "x", 1.0)], relative=False)
    record = json.loads((tmp_path / "out" / "m.jsonl").read_text())
    assert record["audio"]["path"] == str(wav.resolve())


def test_whisper_finetune_string_audio_is_accepted(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio": "a.wav", "sentence": "hi", "duration": 1}) + "\n")
    (utt,) = read_manifest(path)
    assert utt.audio_file == tmp_path / "a.wav" and utt.key == "a"


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json", "invalid manifest record"),
    (json.dumps({"sentence": "x", "duration": 1}), "audio"),
    (json.dumps({"audio": {"path": "a.wav"}, "duration": 1}), "sentence"),
    (json.dumps({"audio": {"path": "a.wav"}, "sentence": "x", "duration": -1}), "duration"),
    (json.dumps({"audio": {"path": "a.wav"}, "sentence": "x", "duration": 1,
                 "sentences": [{"start": 2, "end": 1, "text": "t"}]}), "ends before it starts"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_invalid_record_names_file_and_line(tmp_path, bad, message):
    good = json.dumps({"audio": {"path": "a.wav"}, "sentence": "ok", "duration": 1.0})
    path = tmp_path / "m.jsonl"
    path.write_text(f"{good}\n\n{good}\n{bad}\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        read_manifest(path)
    assert f"{path}:4:" in str(info.value)  # blank lines still count


def test_validate_manifest(tmp_path, make_wav):
    wav = make_wav("a.wav", 1.0)
    path = tmp_path / "m.jsonl"
    write_manifest(path, [Utterance(str(wav), "a", 1.0), Utterance(str(tmp_path / "gone.wav"), "b", 3.0)])
    check = validate_manifest(path)
    assert len(check.utterances) == 2 and [u.sentence for u in check.missing_audio] == ["b"]
    assert check.hours == pytest.approx(4.0 / 3600)
    assert "1 with missing audio" in check.summary()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        validate_manifest(empty)
    assert validate_manifest(empty, allow_empty=True).utterances == []
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "none.jsonl")


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("old\n")

    def broken():
        yield Utterance("a.wav", "a", 1.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_manifest(path, broken())
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_text_key_and_plain_audio_string_are_accepted(tmp_path, make_wav):
    """Manifests written by other tools ({"audio": "x.wav", "text": ...}) read as ours."""
    import json

    from whisper_ft.core.manifest import read_manifest, write_manifest

    wav = make_wav("clips/a.wav", 1.0)
    src = tmp_path / "other.jsonl"
    src.write_text(json.dumps({"id": "a", "audio": "clips/a.wav", "text": "你好", "duration": 1.0,
                               "language": "zh"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (utt,) = read_manifest(src)
    assert utt.sentence == "你好" and utt.audio_file == wav and "text" not in utt.extra
    write_manifest(tmp_path / "ours.jsonl", [utt])
    record = json.loads((tmp_path / "ours.jsonl").read_text(encoding="utf-8"))
    assert record["sentence"] == "你好" and "text" not in record


def test_write_absolute_resolves_against_the_source_manifest(tmp_path, make_wav):
    """relative=False writes paths that still point at the audio from any other folder."""
    from whisper_ft.core.manifest import read_manifest, write_manifest

    wav = make_wav("data/clips/a.wav", 1.0)
    src = tmp_path / "data" / "m.jsonl"
    src.write_text('{"audio": {"path": "clips/a.wav"}, "sentence": "x", "duration": 1.0}\n', encoding="utf-8")
    write_manifest(tmp_path / "elsewhere" / "copy.jsonl", read_manifest(src), relative=False)
    (utt,) = read_manifest(tmp_path / "elsewhere" / "copy.jsonl")
    assert utt.audio_file == wav and utt.audio_file.is_file()


def test_utf8_bom_is_accepted(tmp_path):
    """Notepad and Excel's "UTF-8 CSV" start files with a byte-order mark."""
    path = tmp_path / "bom.jsonl"
    record = json.dumps({"audio": {"path": "a.wav"}, "sentence": "你好", "duration": 1.0}, ensure_ascii=False)
    path.write_bytes("\ufeff".encode() + f"{record}\n{record}\n".encode())
    assert [u.sentence for u in read_manifest(path)] == ["你好", "你好"]


def test_non_utf8_manifest_names_file_and_line(tmp_path):
    path = tmp_path / "gbk.jsonl"
    good = json.dumps({"audio": {"path": "a.wav"}, "sentence": "ok", "duration": 1.0})
    bad = json.dumps({"audio": {"path": "a.wav"}, "sentence": "你好", "duration": 1.0}, ensure_ascii=False)
    path.write_bytes(f"{good}\n".encode() + f"{bad}\n".encode("gbk"))
    with pytest.raises(DataError) as info:
        read_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: not UTF-8") and "save the manifest as UTF-8" in message
    assert "\n" not in message

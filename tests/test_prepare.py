"""`whisper-ft prepare`: every source on small generated inputs, bad inputs, skip counts, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import make_tone, run_cli
from whisper_ft.core.errors import DataError, WhisperFtError
from whisper_ft.core.manifest import read_manifest
from whisper_ft.data import aishell as aishell_mod
from whisper_ft.data.aishell import prepare_aishell
from whisper_ft.data.archive import UnsafeArchiveError, download, safe_extract
from whisper_ft.data.common import PrepareOptions, SkipReason, normalize_text
from whisper_ft.data.jsonl import prepare_jsonl
from whisper_ft.data.kaldi import prepare_kaldi


def tone(seconds: float, sr: int = 16_000) -> np.ndarray:
    return make_tone(seconds, sr, freq=330.0)


def wav(path: Path, seconds: float, sr: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr), sr)
    return path


def manifest_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- a fake AISHELL-1 with the real layout ------------------------------------------------------

# speaker -> split -> [(utterance id, seconds)]; 0.0 s marks a corrupt file, 0.2 s is too short.
SPEAKERS = {
    "S0002": {"train": [("BAC009S0002W0122", 1.0), ("BAC009S0002W0123", 1.5), ("BAC009S0002W0124", 0.2)]},
    "S0003": {"train": [("BAC009S0003W0121", 0.8), ("BAC009S0003W0122", 0.0)]},
    "S0724": {"dev": [("BAC009S0724W0121", 1.2)]},
    "S0764": {"test": [("BAC009S0764W0121", 1.1), ("BAC009S0764W0122", 0.9)]},
}
NO_TRANSCRIPT = "BAC009S0764W0122"  # a wav the transcript does not list
NO_WAV = "BAC009S0002W0999"  # a transcript line without a wav


def transcript_lines() -> list[str]:
    lines = []
    for spk in SPEAKERS.values():
        for utts in spk.values():
            for utt, _ in utts:
                if utt != NO_TRANSCRIPT:
                    lines.append(f"{utt} 甚至 出现 交易 几乎 停滞 的 情况 {utt[-3:]}")
    lines.append(f"{NO_WAV} 这 句 没有 音频")
    return lines


def speaker_tgz(path: Path, speaker: str, splits: dict[str, list[tuple[str, float]]]) -> None:
    """``SXXXX.tar.gz`` holding ``{split}/SXXXX/UTTID.wav`` like the release."""
    with tarfile.open(path, "w:gz") as tar:
        for split, utts in splits.items():
            for utt, seconds in utts:
                buf = io.BytesIO()
                if seconds == 0.0:
                    buf.write(b"RIFF\x00\x00\x00\x00WAVEjunk that is not audio" * 4)
                else:
                    sf.write(buf, tone(seconds), 16_000, format="WAV", subtype="PCM_16")
                info = tarfile.TarInfo(f"{split}/{speaker}/{utt}.wav")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)


def build_data_aishell(parent: Path) -> Path:
    root = parent / "data_aishell"
    (root / "transcript").mkdir(parents=True)
    (root / "transcript" / "aishell_transcript_v0.8.txt").write_text("\n".join(transcript_lines()) + "\n",
                                                                      encoding="utf-8")
    (root / "wav").mkdir()
    for speaker, splits in SPEAKERS.items():
        speaker_tgz(root / "wav" / f"{speaker}.tar.gz", speaker, splits)
    return root


@pytest.fixture
def release_tgz(tmp_path) -> Path:
    """data_aishell.tgz: data_aishell/transcript/... and data_aishell/wav/SXXXX.tar.gz."""
    root = build_data_aishell(tmp_path / "src")
    tgz = tmp_path / "data_aishell.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(root, arcname="data_aishell")
    return tgz


def check_aishell_outputs(target: Path, report) -> None:
    assert {s: r.utterances for s, r in report.splits.items()} == {"train": 3, "dev": 1, "test": 1}
    train = manifest_lines(target / "train.jsonl")
    assert [r["id"] for r in train] == ["BAC009S0002W0122", "BAC009S0002W0123", "BAC009S0003W0121"]
    assert train[0]["sentence"] == "甚至出现交易几乎停滞的情况122"  # spaces removed
    assert [r["duration"] for r in train] == [1.0, 1.5, 0.8]  # real durations, read from the audio
    assert all(r["language"] == "zh" for r in train)
    for split in ("train", "dev", "test"):
        for utt in read_manifest(target / f"{split}.jsonl"):
            assert not Path(utt.audio_path).is_absolute()
            assert utt.audio_file.is_file() and f"/{split}/" in utt.audio_file.as_posix()
    assert report.skip_counts == {"no_transcript": 1, "missing_audio": 1, "unreadable_audio": 1, "too_short": 1}
    assert report.skipped_items(SkipReason.MISSING_AUDIO) == [NO_WAV]
    assert report.skipped_items(SkipReason.NO_TRANSCRIPT)[0].endswith(f"{NO_TRANSCRIPT}.wav")
    assert report.skipped_items(SkipReason.UNREADABLE_AUDIO)[0].endswith("BAC009S0003W0122.wav")
    assert report.hours == pytest.approx((1.0 + 1.5 + 0.8 + 1.2 + 1.1) / 3600)


def test_aishell_release_archive(release_tgz, tmp_path):
    target = tmp_path / "dataset"
    report = prepare_aishell(release_tgz, target, PrepareOptions(language="zh", num_workers=2))
    check_aishell_outputs(target, report)
    assert report.work["release_archive_extracted"] == 1 and report.work["speaker_archives_extracted"] == 4
    assert not list(target.rglob("*.partial"))  # temp folders cleaned up
    summary = report.summary()
    for text in ("train", "no_transcript (audio without transcript): 1", "BAC009S0003W0122.wav", NO_WAV):
        assert text in summary


def test_aishell_rerun_skips_finished_work(release_tgz, tmp_path, monkeypatch):
    target = tmp_path / "dataset"
    prepare_aishell(release_tgz, target, PrepareOptions(language="zh", num_workers=1))
    before = (target / "train.jsonl").read_text(encoding="utf-8")

    def no_extraction(*args, **kwargs):
        raise AssertionError("a re-run must not extract again")

    monkeypatch.setattr(aishell_mod, "safe_extract", no_extraction)
    report = prepare_aishell(release_tgz, target, PrepareOptions(language="zh", num_workers=1))
    assert report.work == {"release_archive_reused": 1, "speaker_archives_reused": 4}
    assert (target / "train.jsonl").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in target.glob("*.jsonl")) == ["dev.jsonl", "test.jsonl", "train.jsonl"]


@pytest.mark.parametrize("point_at", ["data_aishell", "parent"])
def test_aishell_extracted_folder(tmp_path, point_at):
    root = build_data_aishell(tmp_path / "corpus")
    target = tmp_path / "dataset"
    report = prepare_aishell(root if point_at == "data_aishell" else root.parent, target,
                             PrepareOptions(language="zh", num_workers=2))
    check_aishell_outputs(target, report)
    assert "release_archive_extracted" not in report.work
    assert (root / "wav" / "train" / "S0002" / "BAC009S0002W0122.wav").is_file()  # extracted in place
    assert not (target / "data_aishell").exists()


def test_aishell_bad_speaker_archive_is_skipped(tmp_path):
    root = build_data_aishell(tmp_path)
    data = (root / "wav" / "S0724.tar.gz").read_bytes()
    (root / "wav" / "S0724.tar.gz").write_bytes(data[: len(data) // 2])  # truncated
    report = prepare_aishell(root, tmp_path / "out", PrepareOptions(num_workers=2))
    assert report.skip_counts["bad_archive"] == 1
    assert report.skipped_items(SkipReason.BAD_ARCHIVE)[0].endswith("S0724.tar.gz")
    assert report.splits["dev"].utterances == 0 and report.splits["train"].utterances == 3
    assert manifest_lines(tmp_path / "out" / "dev.jsonl") == []
    assert not (root / "wav" / "dev").exists()  # nothing half-extracted
    assert report.skip_counts["missing_audio"] == 2  # S0724's utterance now lacks its wav


def test_aishell_truncated_release_leaves_nothing(release_tgz, tmp_path):
    data = release_tgz.read_bytes()
    release_tgz.write_bytes(data[: len(data) * 2 // 3])
    target = tmp_path / "dataset"
    with pytest.raises(DataError, match="cannot extract"):
        prepare_aishell(release_tgz, target)
    assert list(target.iterdir()) == []


def test_aishell_wrong_archive(tmp_path):
    tgz = tmp_path / "other.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("something/readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match="not the AISHELL-1 release"):
        prepare_aishell(tgz, tmp_path / "dataset")
    with pytest.raises(DataError, match="not an extracted AISHELL-1 folder"):
        prepare_aishell(tmp_path, tmp_path / "dataset")
    with pytest.raises(DataError, match="--filepath"):
        prepare_aishell(tmp_path / "missing.tgz", tmp_path / "dataset")


# --- safe extraction ----------------------------------------------------------------------------

def evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"pwned") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("data_aishell/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("member", "message"), [
    (tarfile.TarInfo("data_aishell/../../evil.txt"), r"'\.\.'"),
    (tarfile.TarInfo("/tmp/evil_abs.txt"), "absolute path"),
    (_link("data_aishell/link", "../../outside", tarfile.SYMTYPE), "points outside"),
    (_link("data_aishell/link", "/etc/passwd", tarfile.SYMTYPE), "points outside"),
    (_link("data_aishell/hard", "../etc/passwd", tarfile.LNKTYPE), "points outside"),
])
def test_safe_extract_refuses_escapes(tmp_path, member, message):
    archive = evil_tar(tmp_path / "evil.tgz", member)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, dest)
    assert not dest.exists()  # no partial files (ok.txt came first and is gone too)
    assert not list(tmp_path.rglob("evil*.txt")) and not list(tmp_path.rglob("outside"))


def test_safe_extract_allows_inner_links(tmp_path):
    with tarfile.open(tmp_path / "a.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("top/dir/f.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
        tar.addfile(_link("top/dir/sub_link", "../dir/f.txt", tarfile.SYMTYPE))
    assert safe_extract(tmp_path / "a.tgz", tmp_path / "out") == ["top"]
    assert (tmp_path / "out" / "top" / "dir" / "sub_link").read_text() == "hi"


def test_cli_refuses_traversal_archive(tmp_path, capsys):
    archive = evil_tar(tmp_path / "data_aishell.tgz", tarfile.TarInfo("data_aishell/../../../evil.txt"))
    code, out, err = run_cli(["prepare", "aishell", "--filepath", str(archive), "--target_dir",
                              str(tmp_path / "ds")], capsys)
    assert code == 1 and out == ""
    last = err.splitlines()[-1]  # stderr also carries the "extracting ..." log line
    assert last.startswith("error: refusing") and err.count("error:") == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("evil.txt"))


# --- download -----------------------------------------------------------------------------------

class _RangeServer:
    """A local HTTP server for one payload, honouring ``Range: bytes=N-``."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.ranges = payload, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                rng = self.headers.get("Range")
                owner.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = owner.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(owner.payload) - 1}/{len(owner.payload)}")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data_aishell.tgz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _RangeServer(os.urandom(300_000))
    yield srv
    srv.close()


def test_download_resumes_and_verifies(server, tmp_path):
    md5 = hashlib.md5(server.payload).hexdigest()
    dest = tmp_path / "data_aishell.tgz"
    (tmp_path / "data_aishell.tgz.part").write_bytes(server.payload[:120_000])  # an interrupted download
    unreachable = "http://127.0.0.1:1/data_aishell.tgz"
    assert download([unreachable, server.url], dest, md5=md5) == dest  # falls through to the mirror
    assert dest.read_bytes() == server.payload and server.ranges == ["bytes=120000-"]
    assert not (tmp_path / "data_aishell.tgz.part").exists()
    download([server.url], dest, md5=md5)  # verified already: no request
    assert len(server.ranges) == 1


def test_download_checksum_mismatch(server, tmp_path):
    dest = tmp_path / "data_aishell.tgz"
    with pytest.raises(DataError, match="checksum mismatch"):
        download([server.url], dest, md5="0" * 32)
    assert list(tmp_path.iterdir()) == []  # the bad download is gone


def test_download_offline_says_filepath(tmp_path):
    with pytest.raises(DataError, match="pass --filepath") as info:
        download(["http://127.0.0.1:1/data_aishell.tgz"], tmp_path / "data_aishell.tgz", md5="0" * 32)
    assert "\n" not in str(info.value)


def test_cli_aishell_offline_without_filepath(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WHISPER_FT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, out, err = run_cli(["--offline", "prepare", "aishell", "--target_dir", str(tmp_path / "ds")], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: offline mode") and "--filepath" in err and err.count("\n") == 1
    # Online but unreachable: the same advice, after trying every URL.
    monkeypatch.setenv("WHISPER_FT_OFFLINE", "0")
    monkeypatch.setattr(aishell_mod, "ARCHIVE_URLS", ("http://127.0.0.1:1/data_aishell.tgz",))
    code, out, err = run_cli(["prepare", "aishell", "--target_dir", str(tmp_path / "ds")], capsys)
    assert code == 1 and "cannot download data_aishell.tgz" in err and "--filepath" in err


def test_cli_aishell(release_tgz, tmp_path, capsys):
    target = tmp_path / "ds"
    code, out, err = run_cli(["prepare", "aishell", "--filepath", str(release_tgz), "--target_dir", str(target),
                              "--num_workers", "2", "--min_duration", "0.9"], capsys)
    assert code == 0, err
    assert "train" in out and "too_short (shorter than --min_duration): 2" in out  # 0.2 s and 0.8 s
    assert "skipped (unreadable_audio)" in err  # warnings go to stderr
    assert len(manifest_lines(target / "train.jsonl")) == 2


# --- kaldi --------------------------------------------------------------------------------------

def test_kaldi(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wav(tmp_path / "audio" / "u1.wav", 1.0, sr=8_000)
    wav(tmp_path / "data" / "local" / "u2.wav", 2.0)
    (tmp_path / "data" / "bad.wav").write_bytes(b"not audio at all" * 20)
    (tmp_path / "data" / "wav.scp").write_text(
        f"u1 audio/u1.wav\n"  # relative to the current folder (Kaldi convention)
        f"u2\tlocal/u2.wav\n"  # relative to wav.scp's folder
        f"u3 {tmp_path}/data/bad.wav\n"
        f"u4 {tmp_path}/missing.wav\n"
        f"u5 sox in.flac -t wav - |\n"
        f"u6 audio/u1.wav\n", encoding="utf-8")
    (tmp_path / "data" / "text").write_text(
        "u1 今天 天气 很 好\nu2 hello  world\nu3 坏\nu4 缺\nu5 管道\nu7 没有 音频\n", encoding="utf-8")
    report = prepare_kaldi("data/wav.scp", "data/text", tmp_path / "out" / "train.jsonl",
                           options=PrepareOptions(num_workers=2, language="zh"))
    records = manifest_lines(tmp_path / "out" / "train.jsonl")
    assert [(r["id"], r["sentence"], r["duration"]) for r in records] == [("u1", "今天天气很好", 1.0),
                                                                          ("u2", "hello world", 2.0)]
    assert records[0]["audio"]["path"] == "../audio/u1.wav" and records[0]["language"] == "zh"
    assert report.skip_counts == {"no_transcript": 1, "unreadable_audio": 2, "missing_audio": 2}
    assert sorted(report.skipped_items(SkipReason.MISSING_AUDIO)) == [f"u4 ({tmp_path}/missing.wav)", "u7"]
    assert "u6" in report.skipped_items(SkipReason.NO_TRANSCRIPT)[0]


def test_kaldi_segments(tmp_path):
    long = wav(tmp_path / "rec.wav", 5.0)
    (tmp_path / "wav.scp").write_text(f"rec1 {long}\n")
    (tmp_path / "segments").write_text("s1 rec1 0.0 1.5\ns2 rec1 1.5 4.0\ns3 rec1 4.5 7.0\n"
                                       "s4 rec1 6.0 8.0\ns5 recX 0 1\ns6 rec1 1 2\n")
    (tmp_path / "text").write_text("s1 a\ns2 b\ns3 c\ns4 d\ns5 e\n")
    report = prepare_kaldi(tmp_path / "wav.scp", tmp_path / "text", tmp_path / "dev.jsonl",
                           segments=tmp_path / "segments", options=PrepareOptions(num_workers=1))
    records = manifest_lines(tmp_path / "dev.jsonl")
    assert [(r["id"], r["audio"].get("start_time"), r["audio"].get("end_time"), r["duration"]) for r in records] == [
        ("s1", 0.0, 1.5, 1.5), ("s2", 1.5, 4.0, 2.5), ("s3", 4.5, 5.0, 0.5)]  # s3 clipped to the audio's end
    assert report.splits["dev"].manifest == tmp_path / "dev.jsonl"
    # s4 lies wholly after the 5 s file: its own reason, with the times (not "empty audio").
    assert report.skip_counts == {"bad_slice": 1, "missing_audio": 1, "no_transcript": 1}
    (bad,) = [s for s in report.skipped if s.reason is SkipReason.BAD_SLICE]
    assert bad.item.startswith("s4 ") and bad.detail == "slice outside the file (6.00..8.00 s, file is 5.00 s)"
    (utt,) = [u for u in read_manifest(tmp_path / "dev.jsonl") if u.id == "s2"]
    assert len(utt.load_audio()) == 40_000


def test_kaldi_errors(tmp_path):
    (tmp_path / "wav.scp").write_text("u1 /nowhere.wav\n")
    (tmp_path / "text").write_text("u1 x\n")
    with pytest.raises(DataError, match="--text"):
        prepare_kaldi(tmp_path / "wav.scp", tmp_path / "nope", tmp_path / "o.jsonl")
    with pytest.raises(DataError, match=r"no usable utterance.*missing_audio"):
        prepare_kaldi(tmp_path / "wav.scp", tmp_path / "text", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()  # no empty or half-written manifest
    (tmp_path / "segments").write_text("s1 u1 zero one\n")
    with pytest.raises(DataError, match="segments:1"):
        prepare_kaldi(tmp_path / "wav.scp", tmp_path / "text", tmp_path / "o.jsonl", segments=tmp_path / "segments")


def test_cli_kaldi(tmp_path, capsys):
    a = wav(tmp_path / "a.wav", 1.0)
    (tmp_path / "wav.scp").write_text(f"a {a}\nb {tmp_path}/b.wav\n")
    (tmp_path / "text").write_text("a one\nb two\n")
    out_path = tmp_path / "ds" / "train.jsonl"
    code, out, err = run_cli(["prepare", "kaldi", "--wav_scp", str(tmp_path / "wav.scp"), "--text",
                              str(tmp_path / "text"), "--output", str(out_path), "--language", "en"], capsys)
    assert code == 0, err
    assert "missing_audio" in out and str(out_path) in out
    assert manifest_lines(out_path)[0]["language"] == "en"
    code, out, err = run_cli(["prepare", "kaldi", "--text", "t"], capsys)
    # A usage error (exit 2 per the CLI policy; cli.main() decides the code, prepare only declares options).
    assert code in (1, 2) and "wav_scp" in err and err.count("\n") == 1
    code, out, err = run_cli(["prepare", "kaldi", "--wav_scp", str(tmp_path / "wav.scp"), "--text",
                              str(tmp_path / "text"), "--min_duration", "5", "--max_duration", "2"], capsys)
    assert code == 1 and err.startswith("error: bad duration range") and err.count("\n") == 1


# --- jsonl --------------------------------------------------------------------------------------

def test_jsonl_slam_asr(tmp_path):
    a = wav(tmp_path / "clips" / "a.wav", 1.0)
    wav(tmp_path / "in" / "rel.wav", 0.7, sr=22_050)
    lines = [
        {"key": "k1", "source": str(a), "target": "你 好"},
        {"key": "k2", "source": "rel.wav", "target": "relative to the input file"},
        {"key": "k3", "source": str(tmp_path / "none.wav"), "target": "gone"},
        {"key": "k4", "source": str(a), "target": ""},
        {"key": "k5", "source": 5, "target": "bad"},
    ]
    src = tmp_path / "in" / "slam.jsonl"
    src.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n", encoding="utf-8")
    report = prepare_jsonl(src, tmp_path / "out" / "train.jsonl", PrepareOptions(num_workers=2))
    records = manifest_lines(tmp_path / "out" / "train.jsonl")
    assert [(r["id"], r["sentence"], r["duration"]) for r in records] == [("k1", "你好", 1.0),
                                                                          ("k2", "relative to the input file", 0.7)]
    assert records[1]["audio"]["path"] == "../in/rel.wav"
    assert report.skip_counts == {"missing_audio": 1, "empty_text": 1, "invalid_record": 2}
    assert report.skipped_items(SkipReason.INVALID_RECORD) == [f"{src}:5", f"{src}:6"]


def test_jsonl_whisper_finetune_list(tmp_path):
    a = wav(tmp_path / "a.wav", 3.0)
    records = [
        {"audio": {"path": "a.wav"}, "sentence": "whole file", "duration": 99, "language": "en"},
        {"audio": {"path": "a.wav", "start_time": 1.0, "end_time": 2.5}, "sentence": "part",
         "sentences": [{"start": 0, "end": 1.5, "text": "part"}], "duration": 1.5, "speaker": "x"},
        {"audio": {"path": str(a)}, "sentence": "short", "duration": 3.0, "extra": 1},
        {"sentence": "no audio"},
    ]
    src = tmp_path / "wf.json"
    src.write_text(json.dumps(records), encoding="utf-8")
    report = prepare_jsonl(src, tmp_path / "ds" / "wf.jsonl", PrepareOptions(max_duration=2.9, language="zh"))
    out = manifest_lines(tmp_path / "ds" / "wf.jsonl")
    assert len(out) == 1 and out[0]["duration"] == 1.5 and out[0]["speaker"] == "x"
    assert out[0]["sentences"] == [{"start": 0.0, "end": 1.5, "text": "part"}] and out[0]["language"] == "zh"
    assert report.skip_counts == {"too_long": 2, "invalid_record": 1}
    assert report.skipped_items(SkipReason.INVALID_RECORD) == [f"{src}:4"]  # record number in a list
    report = prepare_jsonl(src, tmp_path / "ds" / "wf.jsonl", PrepareOptions(max_duration=30))
    assert [r["duration"] for r in manifest_lines(tmp_path / "ds" / "wf.jsonl")] == [3.0, 1.5, 3.0]  # not 99


def test_cli_jsonl(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wav(tmp_path / "a.wav", 1.0)
    (tmp_path / "in.jsonl").write_text(json.dumps({"key": "a", "source": "a.wav", "target": "x"}) + "\n")
    code, out, err = run_cli(["prepare", "jsonl", "--input", "in.jsonl"], capsys)
    assert code == 0, err
    assert manifest_lines(tmp_path / "dataset" / "in.jsonl")[0]["audio"]["path"] == "../a.wav"
    (tmp_path / "bad.json").write_text("[{]")
    code, out, err = run_cli(["prepare", "jsonl", "--input", "bad.json"], capsys)
    assert code == 1 and "invalid JSON array" in err and err.count("\n") == 1
    code, out, err = run_cli(["prepare", "jsonl", "--input", "nope.jsonl"], capsys)
    assert code == 1 and err == "error: input file not found: nope.jsonl (pass --input with a JSON Lines or " \
                                "JSON list file)\n"


# --- Hugging Face datasets ----------------------------------------------------------------------

@pytest.fixture
def hf_dataset(tmp_path) -> Path:
    """A DatasetDict saved to disk: Audio-typed paths in train, raw {bytes, path} dicts in test."""
    datasets = pytest.importorskip("datasets")
    a = wav(tmp_path / "src" / "a.wav", 1.0, sr=44_100)
    b = wav(tmp_path / "src" / "b.wav", 0.3)
    stereo = io.BytesIO()
    sf.write(stereo, np.stack([tone(1.5, 8_000)] * 2, axis=1), 8_000, format="FLAC")
    train = datasets.Dataset.from_dict({"audio": [str(a), str(b), str(a)], "sentence": ["一 二", "short", None],
                                        "other": [1, 2, 3]}).cast_column("audio", datasets.Audio())
    test = datasets.Dataset.from_dict({
        "audio": [{"bytes": stereo.getvalue(), "path": "s.flac"}, {"bytes": b"garbage" * 30, "path": "bad.wav"},
                  {"bytes": None, "path": str(tmp_path / "gone.wav")}],
        "sentence": ["stereo clip", "bad", "gone"], "other": [4, 5, 6]})
    out = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(out))
    return out


def test_hf_saved_dataset(hf_dataset, tmp_path):
    from whisper_ft.data.hf import prepare_hf

    out = tmp_path / "ds"
    report = prepare_hf(str(hf_dataset), None, "audio", "sentence", out, options=PrepareOptions(num_workers=2))
    assert {s: r.utterances for s, r in report.splits.items()} == {"train": 1, "test": 1}
    assert report.skip_counts == {"too_short": 1, "empty_text": 1, "unreadable_audio": 1, "missing_audio": 1}
    train, test = manifest_lines(out / "train.jsonl"), manifest_lines(out / "test.jsonl")
    assert len(train) == 1 and train[0]["audio"]["path"].startswith("wav/train/train_0000000_")
    assert {k: v for k, v in train[0].items() if k != "audio"} == {"sentence": "一二", "duration": 1.0,
                                                                   "id": "train_0000000"}
    assert test[0]["sentence"] == "stereo clip" and test[0]["duration"] == 1.5
    info = sf.info(str(out / test[0]["audio"]["path"]))
    assert (info.samplerate, info.channels) == (16_000, 1)  # 8 kHz stereo flac -> 16 kHz mono wav
    assert len(list((out / "wav" / "train").glob("*.wav"))) == 1  # filtered clips are not written
    assert "test[1] (bad.wav)" in report.skipped_items(SkipReason.UNREADABLE_AUDIO)
    # A re-run reuses the wavs; one split only.
    report = prepare_hf(str(hf_dataset), "test", "audio", "sentence", out, options=PrepareOptions(num_workers=1))
    assert report.work["wav_reused"] == 1 and list(report.splits) == ["test"]


def test_hf_single_dataset_and_errors(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    from whisper_ft.data.hf import prepare_hf

    a = wav(tmp_path / "a.wav", 1.0)
    datasets.Dataset.from_dict({"path": [str(a)], "text": ["hi"]}).save_to_disk(str(tmp_path / "single"))
    report = prepare_hf(str(tmp_path / "single"), "dev", "path", "text", tmp_path / "ds")
    assert list(report.splits) == ["dev"] and report.splits["dev"].utterances == 1
    with pytest.raises(DataError, match="--audio_column with one of path, text"):
        prepare_hf(str(tmp_path / "single"), None, "audio", "text", tmp_path / "ds")
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        prepare_hf(str(tmp_path), None, "audio", "text", tmp_path / "ds")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="hub is offline"):
        prepare_hf("mozilla-foundation/common_voice_11_0", "train", "audio", "sentence", tmp_path / "ds")


def test_cli_hf(hf_dataset, tmp_path, capsys):
    out = tmp_path / "ds"
    code, stdout, err = run_cli(["prepare", "hf", "--dataset", str(hf_dataset), "--split", "train,test",
                                 "--audio_column", "audio", "--text_column", "sentence", "--output_dir", str(out),
                                 "--min_duration", "0.1", "--language", "zh"], capsys)
    assert code == 0, err
    assert "train" in stdout and "test" in stdout and "unreadable_audio" in stdout
    assert [r["sentence"] for r in manifest_lines(out / "train.jsonl")] == ["一二", "short"]
    code, stdout, err = run_cli(["prepare", "hf", "--dataset", str(hf_dataset), "--split", "validation",
                                 "--output_dir", str(out)], capsys)
    assert code == 1 and "choose --split from train, test" in err


# --- common -------------------------------------------------------------------------------------

def test_options_and_text():
    with pytest.raises(WhisperFtError, match="min_duration"):
        PrepareOptions(min_duration=3, max_duration=1)
    with pytest.raises(WhisperFtError, match="--num_workers"):
        PrepareOptions(num_workers=0)
    assert normalize_text("  甚至 出现  交易 ") == "甚至出现交易"
    assert normalize_text("hello   big\tworld") == "hello big world"
    assert normalize_text("我 用 GPU 训练 ，好") == "我用 GPU 训练，好"


def test_prepare_help_is_fast_and_lists_sources():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "whisper_ft", "prepare", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for name in ("aishell", "kaldi", "jsonl", "hf"):
        assert name in proc.stdout
    heavy = [m for m in ("torch", "datasets", "soundfile", "numpy") if f" {m}\n" in proc.stderr]
    assert heavy == []  # nothing heavy is imported just to show help


# --- languages, workers, encodings ---------------------------------------------------------------


def test_language_names_are_normalised_and_unknown_codes_refused(tmp_path, capsys):
    assert PrepareOptions(language="Chinese").language == "zh"
    assert PrepareOptions(language="<|en|>").language == "en"
    with pytest.raises(WhisperFtError, match="unknown language 'xx'; use a Whisper language code: .*zh"):
        PrepareOptions(language="xx")
    wav(tmp_path / "a.wav", 1.0)
    (tmp_path / "wav.scp").write_text(f"u1 {tmp_path / 'a.wav'}\n")
    (tmp_path / "text").write_text("u1 hi\n")
    common = ["prepare", "kaldi", "--wav_scp", str(tmp_path / "wav.scp"), "--text", str(tmp_path / "text"),
              "--output", str(tmp_path / "out" / "train.jsonl")]
    code, out, err = run_cli([*common, "--language", "xx"], capsys)
    assert code == 1 and out == "" and err.startswith("error: unknown language 'xx'") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli([*common, "--language", "chinese"], capsys)
    assert code == 0, err
    assert manifest_lines(tmp_path / "out" / "train.jsonl")[0]["language"] == "zh"


def test_record_languages_are_normalised_or_skipped(tmp_path):
    wav(tmp_path / "a.wav", 1.0)
    rows = [{"audio": {"path": "a.wav"}, "sentence": "one", "language": "Chinese", "id": "u1"},
            {"audio": {"path": "a.wav"}, "sentence": "two", "language": "xx", "id": "u2"},
            {"audio": {"path": "a.wav"}, "sentence": "three", "id": "u3"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = prepare_jsonl(src, tmp_path / "out.jsonl", PrepareOptions(num_workers=1, language="en"))
    assert [(r["id"], r["language"]) for r in manifest_lines(tmp_path / "out.jsonl")] == [("u1", "zh"), ("u3", "en")]
    (skip,) = report.skipped
    assert skip.reason is SkipReason.INVALID_RECORD and skip.detail == "unknown language 'xx'"


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_num_workers_below_one_is_refused(tmp_path, capsys, workers):
    code, out, err = run_cli(["prepare", "kaldi", "--wav_scp", str(tmp_path / "w"), "--text", str(tmp_path / "t"),
                              "--num_workers", workers], capsys)
    assert code == 1 and err == f"error: --num_workers must be at least 1 (got {workers})\n"


def test_non_utf8_inputs_name_the_file_and_bom_is_accepted(tmp_path, capsys):
    wav(tmp_path / "a.wav", 1.0)
    (tmp_path / "wav.scp").write_bytes(b"\xef\xbb\xbf" + f"u1 {tmp_path / 'a.wav'}\n".encode())  # BOM
    (tmp_path / "text").write_bytes("u1 你好\n".encode("gbk"))
    code, out, err = run_cli(["prepare", "kaldi", "--wav_scp", str(tmp_path / "wav.scp"), "--text",
                              str(tmp_path / "text"), "--output", str(tmp_path / "o.jsonl")], capsys)
    assert code == 1 and err.startswith(f"error: {tmp_path / 'text'}:1: not UTF-8 text") and err.count("\n") == 1
    (tmp_path / "text").write_text("u1 你好\n", encoding="utf-8")
    code, out, err = run_cli(["prepare", "kaldi", "--wav_scp", str(tmp_path / "wav.scp"), "--text",
                              str(tmp_path / "text"), "--output", str(tmp_path / "o.jsonl")], capsys)
    assert code == 0, err
    assert [r["id"] for r in manifest_lines(tmp_path / "o.jsonl")] == ["u1"]  # not "\ufeffu1"
    src = tmp_path / "in.jsonl"
    src.write_bytes(json.dumps({"audio": {"path": "a.wav"}, "sentence": "你好"}, ensure_ascii=False).encode("gbk"))
    code, out, err = run_cli(["prepare", "jsonl", "--input", str(src), "--output", str(tmp_path / "j.jsonl")], capsys)
    assert code == 1 and err.startswith(f"error: {src}:1: not UTF-8 text") and err.count("\n") == 1


def test_pack_accepts_a_manifest_with_a_bom(tmp_path):
    from whisper_ft.data.pack import pack_manifest

    wav(tmp_path / "a.wav", 2.0)
    record = json.dumps({"audio": {"path": "a.wav"}, "sentence": "hi", "duration": 2.0, "language": "en"})
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + f"{record}\n{record}\n".encode())
    report = pack_manifest(tmp_path / "m.jsonl", tmp_path / "packed.jsonl")
    assert report.utterances == 1

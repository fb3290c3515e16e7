"""`whisper-ft transcribe`: a corpus -> record shards, errors.jsonl, summary.json and a filtered
training manifest, in this process or on a real local Ray (the tiny random model: nonsense text,
but deterministic, so engines and resumed runs must write the same records)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import REPO, make_tone
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.scale.labels import FILTERS, Filters, training_slices, write_training_manifest
from whisper_ft.scale.plan import collect_items, make_shards
from whisper_ft.scale.run import transcribe_corpus

KEEP_ALL = Filters(min_avg_logprob=None, max_compression_ratio=None)  # the tiny model's text is all doubtful
OFF = ["--min_avg_logprob", "-inf", "--max_compression_ratio", "inf"]


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), make_tone(seconds, seed=seed), 16_000)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Five short clips (two in a subfolder, one name twice) and one 45 s recording."""
    root = tmp_path / "corpus"
    for i, secs in enumerate((1.5, 2.0, 2.5)):
        write_wav(root / f"clip{i}.wav", secs, seed=i)
    write_wav(root / "sub" / "clip0.wav", 3.0, seed=7)
    write_wav(root / "sub" / "other.wav", 1.2, seed=8)
    write_wav(root / "long.wav", 45.0, seed=9)
    return root


def run(inputs, out, model, **kw):
    kw = {"language": "zh", "shard_files": 2, "filters": KEEP_ALL, **kw}
    return transcribe_corpus([str(i) for i in inputs], out, model=str(model), **kw)


def all_records(out: Path) -> list[dict]:
    rows = []
    for part in sorted(out.glob("part-*.jsonl")):
        rows += [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
    return rows


def by_path(out: Path) -> dict[str, dict]:
    """Every record by its audio path; fails if a path is recorded twice."""
    rows = all_records(out)
    paths = [r["audio"]["path"] for r in rows]
    assert len(paths) == len(set(paths)), "an input recorded twice"
    return {r["audio"]["path"]: r for r in rows}


def errors(out: Path) -> dict[str, dict]:
    path = out / "errors.jsonl"
    return {Path(e["audio"]["path"]).name: e for e in map(json.loads, path.read_text().splitlines())} if path.exists() else {}


def test_inputs_of_every_kind_each_place_once(tmp_path, corpus):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": {"path": "corpus/long.wav", "start_time": 1.0, "end_time": 9.0},
                                    "sentence": "", "duration": 8.0, "language": "zh", "id": "slice"}) + "\n")
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\ncorpus/clip1.wav\ncorpus/nowhere.wav\n")
    items, missing = collect_items([corpus, manifest, listing, str(corpus / "sub" / "*.wav"), tmp_path / "gone"])
    assert [it.key for it in items] == ["clip0", "clip1", "clip2", "long", "sub/clip0", "sub/other", "slice"]
    sliced = items[-1]  # a slice of long.wav is an input of its own; clip1 and sub/*.wav again are not
    assert (sliced.start, sliced.end, sliced.language, sliced.planned) == (1.0, 9.0, "zh", 8.0)
    assert sliced.path == str((corpus / "long.wav").resolve())
    assert [m.path for m in missing] == [str(tmp_path / "corpus" / "nowhere.wav"), str(tmp_path / "gone")]
    (tmp_path / "link.wav").symlink_to(corpus / "clip0.wav")  # a path of its own (a farm of links is a corpus)
    linked, _ = collect_items([tmp_path / "link.wav", corpus / "clip0.wav"])
    assert [it.path for it in linked] == [str(tmp_path / "link.wav"), str(corpus / "clip0.wav")]

    for it, minutes in zip(items, (1, 1, 1, 50, 1, 1)):
        it.planned = minutes * 60
    shards = make_shards(items[:6], shard_files=2, shard_minutes=30)
    assert [[it.key for it in s] for s in shards] == [["clip0", "clip1"], ["clip2"], ["long"], ["sub/clip0", "sub/other"]]


def _record(path: str, text: str, duration: float, *, language: str = "zh", logprob: float = -0.2,
            no_speech: float = 0.01, agreement: str | None = None, segments: list | None = None) -> dict:
    if segments is None:
        segments = [{"start": 0.0, "end": duration, "text": text, "avg_logprob": logprob, "no_speech_prob": no_speech,
                     "compression_ratio": 1.0}] if text else []
    record = {"audio": {"path": path}, "id": Path(path).stem, "duration": duration, "language": language,
              "language_probability": None, "text": text, "segments": segments}
    if agreement is not None:
        record["agreement"] = [{"start": s.start, "end": s.end, "text": agreement} for s in training_slices(record)]
    return record


def test_filters_keep_and_drop_what_they_should_on_constructed_records(tmp_path, tiny_model_dir):
    from transformers import WhisperProcessor

    from whisper_ft.training.data import build_samples
    from whisper_ft.training.labels import LabelBuilder
    from whisper_ft.trainkit.manifest import check_manifest

    def wav(name, seconds):
        return str(write_wav(tmp_path / f"{name}.wav", seconds))

    good = "今天天气很好我们去公园散步吧"
    long_segments = [{"start": 10.0 * k, "end": 10.0 * k + 8.0, "text": f"第{k}句话说得很清楚", "avg_logprob": -0.3,
                      "no_speech_prob": 0.02, "compression_ratio": 1.1} for k in range(7)]
    records = [
        _record(wav("good", 4.0), good, 4.0, agreement="今天天气很好，我们去公园散步吧。"),  # punctuation only: agrees
        _record(wav("loop", 20.0), "哈哈" * 60, 20.0, agreement="哈哈" * 60),
        _record(wav("silent", 5.0), "谢谢观看", 5.0, no_speech=0.95, logprob=-0.6, agreement="谢谢观看"),
        _record(wav("nothing", 3.0), "", 3.0, agreement=""),
        _record(wav("disagree", 4.0), "今天天气很好", 4.0, agreement="明天下雨了吗"),
        _record(wav("unsure", 4.0), good, 4.0, logprob=-1.6, agreement=good),
        _record(wav("fast", 1.0), good * 3, 1.0, agreement=good * 3),
        _record(wav("one_char_off", 4.0), "一二三四五六七八九十", 4.0, agreement="一二三四五六七八九千"),  # CER 0.1: kept
        _record(wav("en", 4.0), "hello world this is a test", 4.0, language="en",
                agreement="hello world this is the test"),  # WER 1/6 for English (CER would keep it)
        _record(wav("long", 70.0), "", 70.0, segments=long_segments, agreement="x"),
    ]
    records[-1]["agreement"] = [{"start": s.start, "end": s.end, "text": s.text} for s in training_slices(records[-1])]
    filters = Filters(min_avg_logprob=-1.0, max_compression_ratio=2.4, max_no_speech_prob=0.6,
                      min_chars_per_second=0.5, max_chars_per_second=25.0, max_agreement_wer=0.1)
    counts = write_training_manifest(records, tmp_path / "train.jsonl", filters)
    kept = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in kept] == ["good", "one_char_off", "long_00000", "long_00001", "long_00002"]
    assert counts.dropped == {"no_text": 1, "too_long": 0, "no_speech_prob": 1, "avg_logprob": 1,
                              "compression_ratio": 1, "chars_per_second": 1, "agreement": 2}
    assert counts.slices == 12 and counts.kept == 5 and list(counts.dropped) == list(FILTERS)
    # a long file: slices of at most 30 s inside it, sentence times relative to each slice
    slices = [r for r in kept if r["id"].startswith("long_")]
    assert [(r["audio"]["start_time"], r["audio"]["end_time"]) for r in slices] == [(0.0, 28.0), (30.0, 58.0), (60.0, 68.0)]
    assert slices[1]["sentences"] == [{"start": 0.0, "end": 8.0, "text": "第3句话说得很清楚"},
                                      {"start": 10.0, "end": 18.0, "text": "第4句话说得很清楚"},
                                      {"start": 20.0, "end": 28.0, "text": "第5句话说得很清楚"}]
    assert kept[0]["agreement_error"] == 0.0 and kept[1]["agreement_error"] == pytest.approx(0.1)
    # looser thresholds keep more, from the same records (nothing decoded again)
    loose = write_training_manifest(records, tmp_path / "loose.jsonl", Filters(min_avg_logprob=None, max_compression_ratio=None))
    assert loose.kept == 11 and loose.dropped["no_text"] == 1
    # what finetune reads: the manifest check, and labels with timestamp tokens
    pairs, report = check_manifest(tmp_path / "train.jsonl", name="train", language=None, min_duration=0.5,
                                   max_duration=30)
    assert len(pairs) == 5 and report.total == 5
    processor = WhisperProcessor.from_pretrained(str(tiny_model_dir))
    samples = build_samples(pairs, report, processor.tokenizer, LabelBuilder.from_tokenizer(processor.tokenizer),
                            timestamps=True)
    assert len(samples) == 5 and all(s.segments for s in samples)


def test_local_run_records_every_good_file_and_every_bad_one_with_its_reason(tmp_path, corpus, tiny_ct2):
    bad = corpus / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF0000WAVEnot audio at all" * 10)
    (bad / "empty.flac").write_bytes(b"")
    (bad / "notes.mp3").write_text("these are my notes, not a recording\n")
    (bad / "readme.txt").write_text("not an input: folders give their audio files only")
    sf.write(str(bad / "nan.wav"), np.full(16_000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    listing = tmp_path / "more.txt"
    listing.write_text(f"{corpus / 'clip0.wav'}\n{tmp_path / 'nowhere.wav'}\n")
    out = tmp_path / "out"
    result = run([corpus, listing], out, tiny_ct2, formats=("srt,txt",))
    records = by_path(out)
    assert sorted(Path(p).relative_to(corpus).as_posix() for p in records) == [
        "clip0.wav", "clip1.wav", "clip2.wav", "long.wav", "sub/clip0.wav", "sub/other.wav"]
    failed = errors(out)
    assert {k: v["reason"] for k, v in failed.items()} == {
        "corrupt.wav": "unreadable", "empty.flac": "empty", "notes.mp3": "unreadable", "nan.wav": "unreadable",
        "nowhere.wav": "missing"}
    assert "non-finite" in failed["nan.wav"]["message"] and failed["empty.flac"]["audio"]["size"] == 0

    long = records[str(corpus / "long.wav")]
    assert long["duration"] == pytest.approx(45.0) and long["segments"][-1]["end"] > 30.0
    for r in records.values():
        assert r["language"] == "zh" and r["language_probability"] is None  # given, not detected
        assert r["text"] and set(r["segments"][0]) == {"start", "end", "text", "avg_logprob", "no_speech_prob",
                                                        "compression_ratio"}
        assert r["model"] == {"name": str(tiny_ct2), "path": str(Path(tiny_ct2).resolve()), "compute_type": "int8"}
        assert r["decoding"]["beam_size"] == 5 and r["decoding"]["temperature"] == 0.0
        assert r["audio"]["size"] == Path(r["audio"]["path"]).stat().st_size and "mtime_ns" in r["audio"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == 6 and summary["failures"] == {"files": 5, "by_reason": {
        "empty": 1, "missing": 1, "unreadable": 3}}
    assert summary["this_run"]["files"] == 6 and summary["audio_hours"] * 3600 == pytest.approx(55.2, abs=0.1)
    assert sorted(p.relative_to(out / "srt").as_posix() for p in (out / "srt").rglob("*.srt")) == [
        "clip0.srt", "clip1.srt", "clip2.srt", "long.srt", "sub/clip0.srt", "sub/other.srt"]
    assert (out / "txt" / "long.txt").read_text().strip() == long["text"]
    assert "recorded: 6 files" in result.describe() and "unreadable 3" in result.describe()
    result.raise_for_failures()  # some inputs failed, the run did its job: a warning, not an error

    short = run([corpus / "long.wav"], tmp_path / "limit", tiny_ct2, max_audio_seconds=40)
    assert errors(tmp_path / "limit")["long.wav"]["reason"] == "too_long"
    with pytest.raises(WhisperFtError, match="no input could be transcribed"):
        short.raise_for_failures()


def test_rerun_decodes_only_what_is_new_or_changed_and_retries_errors(tmp_path, corpus, tiny_ct2):
    (corpus / "empty.flac").write_bytes(b"")
    out = tmp_path / "out"
    first = run([corpus], out, tiny_ct2, verify_inputs=True)
    assert first.summary["this_run"]["files"] == 6 and set(errors(out)) == {"empty.flac"}
    before = by_path(out)
    assert all(len(r["audio"]["sha256"]) == 64 for r in before.values())

    # nothing new: nothing decoded, the same records; the error is tried again
    again = run([corpus], out, tiny_ct2, verify_inputs=True, train_manifest=tmp_path / "train.jsonl")
    assert again.summary["this_run"]["files"] == 0 and again.summary["inputs"]["recorded_before"] == 6
    assert again.summary["this_run"]["failed"] == 1 and by_path(out) == before
    assert again.summary["train_manifest"]["kept"] == 7  # 5 clips + the 45 s file's two slices
    # a new file, a fixed one, one touched (same content) and one changed
    write_wav(corpus / "new.wav", 1.7, seed=30)
    sf.write(str(corpus / "empty.flac"), make_tone(1.1, seed=31), 16_000)
    os.utime(corpus / "clip0.wav", ns=(time.time_ns(), time.time_ns() + 10**9))
    write_wav(corpus / "clip1.wav", 2.2, seed=32)
    third = run([corpus], out, tiny_ct2, verify_inputs=True, train_manifest=tmp_path / "train.jsonl")
    assert third.summary["this_run"]["files"] == 3 and errors(out) == {}  # not clip0: its content is the same
    rows = all_records(out)
    assert [Path(r["audio"]["path"]).name for r in rows[-3:]] == ["clip1.wav", "empty.flac", "new.wav"]
    assert third.summary["files"] == 8  # clip1's new record supersedes the old one
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    clip1 = [r for r in train if r["id"] == "clip1"]
    assert len(clip1) == 1 and clip1[0]["duration"] == pytest.approx(2.2)
    # without --verify_inputs the touched file counts as changed (size and modification time)
    assert run([corpus], out, tiny_ct2, train_manifest=tmp_path / "train.jsonl").summary["this_run"]["files"] == 1

    with pytest.raises(WhisperFtError, match=r"decoded otherwise \(decoding.beam_size: 5 there, 2 now\)"):
        run([corpus], out, tiny_ct2, beam_size=2)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WhisperFtError, match="did not write"):
        run([corpus], foreign, tiny_ct2)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    old = tmp_path / "old"
    (old / "done").mkdir(parents=True)
    (old / "whisper_ft_transcribe.json").write_text(json.dumps({"tool": "whisper-ft transcribe", "plan": "x"}))
    with pytest.raises(WhisperFtError, match="older `whisper-ft transcribe`"):
        run([corpus], old, tiny_ct2)


def test_one_run_at_a_time_per_folder_and_options_checked_first(tmp_path, corpus, tiny_ct2):
    from whisper_ft.scale.output import OutputFolder

    out = tmp_path / "out"
    run([corpus / "clip0.wav"], out, tiny_ct2)
    marker = json.loads((out / "whisper_ft_transcribe.json").read_text())
    holder = OutputFolder(out)  # as a run of the same command would
    holder.open({k: marker[k] for k in ("model", "decoding")})
    try:
        with pytest.raises(WhisperFtError, match="another `whisper-ft transcribe` is writing"):
            run([corpus], out, tiny_ct2)
    finally:
        holder.close()
    for kw, message in (({"workers": 2}, "need --engine ray"), ({"engine": "spark"}, "unknown --engine"),
                        ({"task": "summarise"}, "unknown task"), ({"language": "klingon"}, "unknown language"),
                        ({"formats": ("srt,docx",)}, "docx"),
                        ({"filters": Filters(max_agreement_wer=0.2)}, "needs --agreement_model")):
        with pytest.raises(WhisperFtError, match=message):
            run([corpus], tmp_path / "new", tiny_ct2, **kw)
    assert not (tmp_path / "new").exists()


def test_engine_ray_without_ray_is_a_one_line_error(tmp_path, corpus):
    code = ("import sys; sys.modules['ray'] = None; from whisper_ft.cli import main; "
            f"main(['transcribe', {str(corpus)!r}, '--output_dir', {str(tmp_path / 'out')!r}, '--engine', 'ray'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray: pip install 'whisper-ft[scale]' (or pip install 'ray[data]')"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_agreement_model_and_a_manifest_finetune_trains_on(tmp_path, corpus, tiny_ct2, tiny_model_dir, monkeypatch,
                                                           capsys):
    from tests.conftest import run_cli
    from tests.tiny_whisper import build_tiny_whisper
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.training import model as training_model

    other = convert_model(build_tiny_whisper(tmp_path / "other", seed=1), tmp_path / "other-ct2",
                          quantization="float32").output_dir
    same = run([corpus], tmp_path / "same", tiny_ct2, agreement_model=str(tiny_ct2),
               train_manifest=tmp_path / "same.jsonl", filters=Filters(None, None, max_agreement_wer=0.0))
    t = same.summary["train_manifest"]
    # a model agrees with itself on every short clip (the same audio in the same packed batch); the
    # 45 s file's slices are decoded alone by the agreement model, and may differ from its long-form text
    assert t["slices"] == 7 and t["kept"] >= 5 and t["dropped"]["agreement"] == 7 - t["kept"]
    kept = t["kept"]
    assert all(r["agreement"] and r["agreement_model"]["path"] == str(Path(tiny_ct2).resolve())
               for r in all_records(tmp_path / "same"))
    differ = run([corpus], tmp_path / "differ", tiny_ct2, agreement_model=str(other),
                 train_manifest=tmp_path / "differ.jsonl", filters=Filters(None, None))
    t = differ.summary["train_manifest"]
    assert t["kept"] < kept and t["dropped"]["agreement"] == 7 - t["kept"] and t["filters"]["max_agreement_wer"] == 0.1

    def stop(*args, **kwargs):
        raise WhisperFtError("stopped before loading the model")

    monkeypatch.setattr(training_model, "load_base_for_training", stop)
    code, _, err = run_cli(["finetune", "--base_model", str(tiny_model_dir), "--train_data", str(tmp_path / "same.jsonl"),
                            "--test_data", str(tmp_path / "same.jsonl"), "--output_dir", str(tmp_path / "models"),
                            "--num_workers", "0", "--timestamps"], capsys)
    assert code == 1 and "stopped before loading the model" in err
    assert f"train data {tmp_path / 'same.jsonl'}: {kept} of {kept} utterances kept" in err
    assert f"timestamps: {kept} of {kept} training utterances have sentence times" in err


def start_cli(args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "whisper_ft", "transcribe", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def common_args(model: Path) -> list[str]:
    return ["--model_path", str(model), "--language", "zh", *OFF]


def assert_clean_parts(out: Path) -> None:
    """No temp file left, every part whole (each line a record)."""
    assert not [p.name for p in out.rglob(".*.tmp")]
    for part in out.glob("part-*.jsonl"):
        text = part.read_text(encoding="utf-8")
        assert text.endswith("\n") and all(json.loads(line)["audio"] for line in text.splitlines())


@pytest.mark.slow
def test_sigterm_to_the_group_stops_a_local_run_that_then_completes(tmp_path, corpus, tiny_ct2):
    from tests.group_signal import signal_group_when

    for i in range(12):
        write_wav(corpus / "more" / f"m{i:02d}.wav", 2.0, seed=40 + i)
    (corpus / "0broken.wav").write_bytes(b"RIFF....WAVE" * 4)  # first in the first shard; the rerun retries it
    reference = tmp_path / "reference"
    run([corpus], reference, tiny_ct2)
    out = tmp_path / "out"
    args = ["transcribe", str(corpus), "--output_dir", str(out), "--shard_files", "2", *common_args(tiny_ct2)]
    stopped = signal_group_when(args, re.compile(rb"files \(\d+ failed\)"), signal.SIGTERM, cwd=REPO, settle=0.0)
    assert stopped.code == 130 and stopped.stderr.rstrip().splitlines()[-1] == "interrupted", stopped.stderr
    assert "Traceback" not in stopped.stderr and not stopped.stragglers and not (out / "summary.json").exists()
    assert_clean_parts(out)
    done = len(all_records(out))
    assert 1 <= done < 18
    proc = start_cli([str(corpus), "--output_dir", str(out), "--shard_files", "2", *common_args(tiny_ct2)])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert f"{done} recorded before".encode() in stderr
    assert by_path(out) == by_path(reference)


# --- real Ray (a local cluster started by the command) -------------------------------------------


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """A Ray temp folder of this test's own (short: Ray's socket paths must fit 107 bytes); every Ray
    process the command starts inherits RAY_TMPDIR, which is how leftovers are found."""
    pytest.importorskip("ray")
    path = tempfile.mkdtemp(prefix="wft-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield path
    assert _ray_processes(path, within=20.0) == [], "Ray processes left running"


def _ray_processes(tmpdir: str, within: float = 0.0) -> list[str]:
    """Live (non-zombie) processes whose environment has RAY_TMPDIR=tmpdir, after waiting up to ``within`` s."""
    import psutil

    deadline = time.monotonic() + within
    while True:
        found = []
        for p in psutil.process_iter(["pid", "name", "status"]):
            try:
                if p.info["status"] != psutil.STATUS_ZOMBIE and p.environ().get("RAY_TMPDIR") == tmpdir:
                    found.append(f"{p.pid} {p.info['name']}")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_records_what_local_records_even_when_a_worker_is_killed(tmp_path, corpus, tiny_ct2, ray_tmpdir):
    import psutil

    for i in range(10):  # enough shards that the run is still going when a worker is killed
        write_wav(corpus / "more" / f"m{i}.wav", 2.0 + i / 10, seed=20 + i)
    (corpus / "more" / "broken.wav").write_bytes(b"RIFF....WAVE" * 4)
    local = tmp_path / "local"
    run([corpus], local, tiny_ct2, formats=("srt",))
    out = tmp_path / "ray"
    proc = start_cli([str(corpus), "--output_dir", str(out), "--engine", "ray", "--workers", "2", "--shard_files", "2",
                      "--format", "srt", *common_args(tiny_ct2)])
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            if any(out.glob("part-*.jsonl")):
                workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                           if p.name().startswith("ray::MapWorker")]
                if workers:
                    killed = workers[0].pid
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert killed is not None, "the run ended before a worker could be killed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["engine"] == "ray" and summary["this_run"]["workers"] == 2
    assert summary["files"] == 16 and summary["failures"]["by_reason"] == {"unreadable": 1}
    assert by_path(out) == by_path(local)  # every input once, the same records as the local engine
    assert errors(out) == errors(local)
    mine = {p.relative_to(out / "srt"): p.read_bytes() for p in (out / "srt").rglob("*.srt")}
    assert mine == {p.relative_to(local / "srt"): p.read_bytes() for p in (local / "srt").rglob("*.srt")}
    assert len(mine) == 16 and b"recorded: 16 files" in stdout


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_mid_ray_run_then_rerun_gives_the_uninterrupted_records(tmp_path, corpus, tiny_ct2, ray_tmpdir):
    from tests.group_signal import signal_group_when

    for i in range(16):
        write_wav(corpus / "more" / f"m{i:02d}.wav", 1.5 + i / 20, seed=60 + i)
    (corpus / "0broken.wav").write_bytes(b"RIFF....WAVE" * 4)  # first in the first shard; the rerun retries it
    reference = tmp_path / "reference"
    run([corpus], reference, tiny_ct2)  # uninterrupted (shards of two clips packed together)
    out = tmp_path / "out"
    args = ["transcribe", str(corpus), "--output_dir", str(out), "--engine", "ray", "--workers", "1",
            "--shard_files", "2", *common_args(tiny_ct2)]
    stopped = signal_group_when(args, re.compile(rb"files \(\d+ failed\)"), signal.SIGINT, cwd=REPO, settle=0.0,
                                start_timeout=240)
    assert stopped.code == 130, stopped.stderr
    assert stopped.stderr.rstrip().splitlines()[-1] == "interrupted" and "Traceback" not in stopped.stderr
    assert not stopped.stragglers and _ray_processes(ray_tmpdir, within=20.0) == []
    assert_clean_parts(out)
    done = len(all_records(out))
    assert 1 <= done < 22 and not (out / "summary.json").exists()
    # the rerun (here on the local engine: the same records either way) decodes only the rest
    proc = start_cli([str(corpus), "--output_dir", str(out), "--shard_files", "2", *common_args(tiny_ct2)])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert f"{done} recorded before, {23 - done} to transcribe".encode() in stderr
    assert by_path(out) == by_path(reference)


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_real_speech_language_detected_with_its_probability_short_and_long(tmp_path, shared_audio_manifest):
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.core.audio import load_audio

    zh = []
    for r in (r for r in shared_audio_manifest if r["language"] == "zh"):  # just over 30 s in all
        if sum(z["duration"] for z in zh) < 33:
            zh.append(r)
    en = next(r for r in shared_audio_manifest if r["language"] == "en")
    joined = np.concatenate([load_audio(SHARED_AUDIO / r["audio"]) for r in zh])
    assert len(joined) > 30 * 16_000
    sf.write(str(tmp_path / "joined.wav"), joined, 16_000)
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{SHARED_AUDIO / r['audio']}\n" for r in (zh[0], en)) + f"{tmp_path / 'joined.wav'}\n")
    result = transcribe_corpus([listing], tmp_path / "out", model="base", shard_files=8, beam_size=1,
                               compute_type="int8")
    records = {Path(p).name: r for p, r in by_path(tmp_path / "out").items()}
    assert result.summary["files"] == 3
    for name, lang in ((Path(zh[0]["audio"]).name, "zh"), (Path(en["audio"]).name, "en"), ("joined.wav", "zh")):
        r = records[name]
        assert r["language"] == lang and 0.5 < r["language_probability"] <= 1.0, (name, r["language"])
    assert len(records["joined.wav"]["segments"]) >= 3 and records["joined.wav"]["segments"][-1]["end"] > 25.0


@pytest.mark.real
@pytest.mark.slow
def test_real_speech_a_resumed_run_packs_each_clip_with_the_neighbours_it_had(tmp_path):
    """whisper-base's text of a packed clip depends on the clips it shares windows with: a resumed
    run must plan its shards over every input (not over what is left) to give the records of an
    uninterrupted run. The interrupted state is made exactly: the first parts of the full run."""
    import shutil

    aishell = REPO.parent / "shared" / "aishell_sample"
    if not (aishell / "test.jsonl").is_file():
        pytest.skip(f"needs the AISHELL sample at {aishell}")
    rows = [json.loads(line) for line in (aishell / "test.jsonl").read_text(encoding="utf-8").splitlines()][:8]
    (tmp_path / "0broken.wav").write_bytes(b"RIFF....WAVE" * 4)  # first: shard 0 records one clip, not two
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{tmp_path / '0broken.wav'}\n" + "".join(f"{aishell / r['audio']['path']}\n" for r in rows))
    kw = {"model": "base", "language": "zh", "shard_files": 2, "cpus_per_worker": 2, "compute_type": "int8"}
    transcribe_corpus([listing], tmp_path / "full", **kw)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("whisper_ft_transcribe.json", "part-00000.jsonl", "part-00001.jsonl"):  # as if stopped there
        shutil.copy(tmp_path / "full" / name, out / name)
    resumed = transcribe_corpus([listing], out, **kw)
    assert resumed.summary["inputs"]["recorded_before"] == 3 and resumed.summary["this_run"]["files"] == 5
    assert by_path(out) == by_path(tmp_path / "full")

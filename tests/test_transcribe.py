"""`whisper-ft transcribe`: many files -> shards -> a training manifest, in this process or on a
real local Ray cluster (the tiny random model: nonsense text, but deterministic, so engines and
reruns must write the same bytes)."""

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
from whisper_ft.scale.plan import collect_items, fingerprint, make_shards
from whisper_ft.scale.run import transcribe_at_scale

KEEP_ALL = {"min_avg_logprob": None, "max_compression_ratio": None}  # the tiny model's text is all doubtful


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), make_tone(seconds, seed=seed), 16_000)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Five short clips (two of them in a subfolder, one name twice) and one 45 s recording."""
    root = tmp_path / "corpus"
    for i, secs in enumerate((1.5, 2.0, 2.5)):
        write_wav(root / f"clip{i}.wav", secs, seed=i)
    write_wav(root / "sub" / "clip0.wav", 3.0, seed=7)
    write_wav(root / "sub" / "other.wav", 1.2, seed=8)
    write_wav(root / "long.wav", 45.0, seed=9)
    return root


def run(inputs, out, model, **kw):
    kw = {"language": "zh", "long_batch_size": 1, "shard_files": 2, **KEEP_ALL, **kw}
    return transcribe_at_scale([str(i) for i in inputs], out, model=str(model), **kw)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_plan_reads_every_kind_of_input_with_unique_keys(tmp_path, corpus):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": {"path": "corpus/long.wav", "start_time": 1.0, "end_time": 9.0},
                                    "sentence": "", "duration": 8.0, "language": "zh", "id": "slice"}) + "\n")
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\ncorpus/clip1.wav\ncorpus/nowhere.wav\n")
    items, missing = collect_items([corpus, manifest, listing, str(corpus / "sub" / "*.wav"), tmp_path / "gone"])
    keys = [it.key for it in items]
    assert keys[:6] == ["clip0", "clip1", "clip2", "long", "sub/clip0", "sub/other"]  # folder: sorted, relative
    assert keys[6:] == ["slice", "clip1-2", "clip0-2", "other"]  # repeated names made unique
    assert len(set(keys)) == len(keys)
    sliced = items[6]
    assert (sliced.start, sliced.end, sliced.language, sliced.duration) == (1.0, 9.0, "zh", 8.0)
    assert sliced.path == str((corpus / "long.wav").resolve())
    assert [m.path for m in missing] == [str(tmp_path / "corpus" / "nowhere.wav"), str(tmp_path / "gone")]

    for it, d in zip(items, (1, 1, 1, 50, 1, 1)):
        it.duration = d * 60
    shards = make_shards(items[:6], shard_files=2, shard_minutes=30)
    assert [[it.key for it in s] for s in shards] == [["clip0", "clip1"], ["clip2"], ["long"], ["sub/clip0", "sub/other"]]
    assert fingerprint(shards) != fingerprint(make_shards(items[:6], shard_files=3, shard_minutes=30))


@pytest.mark.slow
def test_local_run_writes_a_training_manifest_finetune_accepts(tmp_path, corpus, tiny_ct2):
    from whisper_ft.training.data import check_manifest

    out = tmp_path / "out"
    result = run([corpus], out, tiny_ct2, formats=("srt", "json"))
    s = result.summary
    assert (s["files"], s["shards"], s["transcribed_files"], s["failed_files"]) == (6, 3, 6, 0)
    assert s["this_run"]["engine"] == "local" and s["this_run"]["shards"] == 3
    assert abs(s["audio_hours"] * 3600 - (1.5 + 2 + 2.5 + 3 + 1.2 + 45)) < 0.1
    train = records(out / "train.jsonl")
    assert len(train) == s["records"] and s["records"] + s["rejected"] >= 6
    long = [r for r in train if r["audio"]["path"].endswith("long.wav")]
    assert len(long) >= 2, "a 45 s recording becomes several training slices"
    for r in long:  # slices of at most 30 s inside the file, each with its own text
        assert 0 <= r["audio"]["start_time"] < r["audio"]["end_time"] <= 45.0 + 1e-6
        assert r["duration"] <= 30.0 and r["sentence"] and r["id"].startswith("long_")
    short = {r["id"]: r for r in train if not r["audio"]["path"].endswith("long.wav")}
    assert set(short) <= {"clip0", "clip1", "clip2", "sub/clip0", "sub/other"}
    assert all(r["language"] == "zh" and r["sentences"] and "avg_logprob" in r for r in train)
    kept, report = check_manifest(out / "train.jsonl", name="train", language=None, min_duration=0.5,
                                  max_duration=30)
    assert len(kept) == len(train) and report.total == len(train)
    # every file's whole transcript, as --format asked
    assert sorted(p.relative_to(out / "srt").as_posix() for p in (out / "srt").rglob("*.srt")) == [
        "clip0.srt", "clip1.srt", "clip2.srt", "long.srt", "sub/clip0.srt", "sub/other.srt"]
    assert json.loads((out / "json" / "long.json").read_text())["duration"] == pytest.approx(45.0)
    assert "train.jsonl" in result.describe()


def test_bad_files_are_failures_and_the_others_are_done(tmp_path, corpus, tiny_ct2):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.wav").write_bytes(b"RIFF0000WAVEnot audio at all" * 10)
    (bad / "empty.flac").write_bytes(b"")
    nan = np.full(16_000, np.nan, dtype=np.float32)
    sf.write(str(bad / "nan.wav"), nan, 16_000, subtype="FLOAT")
    out = tmp_path / "out"
    result = run([corpus / "clip0.wav", bad, corpus / "clip1.wav", tmp_path / "missing.wav"], out, tiny_ct2)
    assert result.summary["failed_files"] == 3 and result.summary["transcribed_files"] == 2
    failed = {Path(f["audio"]).name: f["error"] for f in result.failures}
    assert set(failed) == {"garbage.wav", "empty.flac", "nan.wav"}
    assert "empty" in failed["empty.flac"] and "non-finite" in failed["nan.wav"]
    assert [m.path for m in result.missing] == [str(tmp_path / "missing.wav")]
    assert {r["id"] for r in records(out / "train.jsonl")} == {"clip0", "clip1"}
    with pytest.raises(WhisperFtError, match=r"4 of 6 inputs failed"):
        result.raise_for_failures()


@pytest.mark.slow
def test_rerun_resumes_only_unfinished_shards_and_refuses_other_settings(tmp_path, corpus, tiny_ct2):
    out = tmp_path / "out"
    first = run([corpus], out, tiny_ct2)
    train = (out / "train.jsonl").read_bytes()
    parts = {p.name: p.read_bytes() for p in (out / "manifests").iterdir()}
    (out / "done" / "part-00001.json").unlink()  # as if the run had stopped during shard 1
    (out / "manifests" / "part-00001.jsonl").unlink()
    again = run([corpus], out, tiny_ct2)
    assert again.summary["this_run"]["shards"] == 1 and again.summary["shards_done"] == first.summary["shards_done"]
    assert {p.name: p.read_bytes() for p in (out / "manifests").iterdir()} == parts
    assert (out / "train.jsonl").read_bytes() == train
    assert run([corpus], out, tiny_ct2).summary["this_run"]["shards"] == 0  # all done: nothing decoded

    with pytest.raises(WhisperFtError, match=r"other settings \(beam_size: 5 there, 2 now\)"):
        run([corpus], out, tiny_ct2, beam_size=2)
    with pytest.raises(WhisperFtError, match="other inputs"):
        run([corpus / "sub"], out, tiny_ct2)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WhisperFtError, match="did not write"):
        run([corpus], foreign, tiny_ct2)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_local_engine_refuses_ray_options(tmp_path, corpus, tiny_ct2):
    with pytest.raises(WhisperFtError, match="need --engine ray"):
        run([corpus], tmp_path / "out", tiny_ct2, workers=2)
    with pytest.raises(WhisperFtError, match="unknown --engine"):
        run([corpus], tmp_path / "out", tiny_ct2, engine="spark")
    assert not (tmp_path / "out").exists()


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


def start_cli(args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "whisper_ft", "transcribe", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def common_args(model: Path) -> list[str]:
    return ["--model_path", str(model), "--language", "zh", "--long_batch_size", "1", "--min_avg_logprob", "-1e9",
            "--max_compression_ratio", "1e9"]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_writes_what_local_writes_even_when_a_worker_is_killed(tmp_path, corpus, tiny_ct2, ray_tmpdir):
    import psutil

    for i in range(10):  # enough shards that the run is still going when a worker is killed
        write_wav(corpus / "more" / f"m{i}.wav", 2.0 + i / 10, seed=20 + i)
    local = tmp_path / "local"
    run([corpus], local, tiny_ct2, shard_files=1, formats=("srt",))
    out = tmp_path / "ray"
    proc = start_cli([str(corpus), "--output_dir", str(out), "--engine", "ray", "--workers", "2", "--shard_files", "1",
                "--format", "srt", *common_args(tiny_ct2)])
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            if (out / "done").is_dir() and any((out / "done").iterdir()):
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
    assert summary["shards_done"] == summary["shards"] == 16 and summary["failed_files"] == 0
    # the same shards, the same bytes: manifests, subtitles and the merged manifest
    for sub in ("manifests", "srt"):
        mine = {p.relative_to(out / sub): p.read_bytes() for p in (out / sub).rglob("*") if p.is_file()}
        theirs = {p.relative_to(local / sub): p.read_bytes() for p in (local / sub).rglob("*") if p.is_file()}
        assert mine == theirs and mine
    assert (out / "train.jsonl").read_bytes() == (local / "train.jsonl").read_bytes()
    assert b"training records" in stdout


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_to_the_group_stops_a_ray_run_that_then_resumes(tmp_path, corpus, tiny_ct2, ray_tmpdir):
    from tests.group_signal import signal_group_when

    for i in range(24):
        write_wav(corpus / "more" / f"m{i}.wav", 2.0, seed=40 + i)
    out = tmp_path / "out"
    args = ["transcribe", str(corpus), "--output_dir", str(out), "--engine", "ray", "--workers", "1",
            "--shard_files", "1", *common_args(tiny_ct2)]
    stopped = signal_group_when(args, re.compile(rb"shard \d+ done"), signal.SIGTERM, cwd=REPO, settle=0.0)
    assert stopped.code == 130, stopped.stderr
    assert stopped.stderr.rstrip().splitlines()[-1] == "interrupted" and "Traceback" not in stopped.stderr
    assert not stopped.stragglers
    assert _ray_processes(ray_tmpdir, within=20.0) == []
    done = len(list((out / "done").iterdir()))
    assert 1 <= done < 30 and not (out / "summary.json").exists()

    proc = start_cli([str(corpus), "--output_dir", str(out), "--engine", "ray", "--workers", "1", "--shard_files", "1",
                *common_args(tiny_ct2)])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode(errors="replace")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_done"] == summary["shards"] == 30
    assert summary["this_run"]["shards"] == 30 - done
    assert f"{done} done before".encode() in stderr

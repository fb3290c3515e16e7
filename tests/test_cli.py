"""The `whisper-ft` entry point: bare command, --version, global flags anywhere, flag display,
library warnings, and interrupts (Ctrl-C / SIGTERM) that stop at once with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from whisper_ft.cli import main
from whisper_ft.core.errors import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_debug(monkeypatch):
    """main() sets WHISPER_FT_DEBUG / HF_HUB_OFFLINE in os.environ: restore them after the test."""
    monkeypatch.setenv("WHISPER_FT_DEBUG", "0")
    monkeypatch.setenv("WHISPER_FT_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- bare command, --version -------------------------------------------------------------------


def test_bare_command_prints_the_help_and_exits_0(capsys):
    code, out, err = run_cli([], capsys)
    assert code == 0 and err == ""
    assert "Usage: whisper-ft" in out and "finetune" in out and "prepare" in out
    code, out, err = run_cli(["prepare"], capsys)  # a bare group too
    assert code == 0 and err == "" and "Usage: whisper-ft prepare" in out and "kaldi" in out


def test_version(capsys):
    from importlib.metadata import version

    code, out, err = run_cli(["--version"], capsys)
    assert code == 0 and err == ""
    assert out == f"whisper-ft {version('whisper-ft')}\n"


# --- --debug / --offline anywhere -----------------------------------------------------------------


def test_debug_after_the_subcommand_shows_the_real_error(tmp_path, capsys, no_debug):
    args = ["prepare", "kaldi", "--wav_scp", str(tmp_path / "nope.scp"), "--text", str(tmp_path / "text")]
    code, out, err = run_cli(args, capsys)
    assert code == 1 and err.startswith("error: wav_scp file not found")
    with pytest.raises(DataError, match="wav_scp file not found"):  # --debug: the exception itself
        main([*args, "--debug"])
    assert os.environ["WHISPER_FT_DEBUG"] == "1"


def test_offline_after_the_subcommand(tmp_path, capsys, no_debug, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, out, err = run_cli(["prepare", "aishell", "--target_dir", str(tmp_path / "ds"), "--offline"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: offline mode") and "--filepath" in err and err.count("\n") == 1
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_global_flags_after_a_double_dash_are_left_alone():
    from whisper_ft.cli import _hoist_global_flags

    assert _hoist_global_flags(["infer", "a.wav", "--offline", "--debug"]) == ["--offline", "--debug", "infer",
                                                                              "a.wav"]
    assert _hoist_global_flags(["infer", "--", "--debug"]) == ["infer", "--", "--debug"]


# --- help: flags are flags ------------------------------------------------------------------------


def _all_command_paths() -> list[list[str]]:
    import typer

    from whisper_ft.cli import app

    paths = [[]]

    def walk(command, prefix):
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_help_shows_no_type_for_flags(capsys):
    """`<bool>` next to a flag reads as "takes a value" (`--vad true` then made "true" an input file)."""
    paths = _all_command_paths()
    assert ["infer-ct2"] in paths and ["prepare", "tts"] in paths and ["models", "import"] in paths
    for path in paths:
        code, out, _ = run_cli([*path, "--help"], capsys)
        assert code == 0 and "Usage:" in out, path
        assert "<bool>" not in out, f"whisper-ft {' '.join(path)} --help shows <bool>"
    code, out, _ = run_cli(["finetune", "--help"], capsys)
    assert "<int>" in out  # options with values still show their type


# --- library warnings ----------------------------------------------------------------------------


def test_library_warnings_are_hidden_unless_debug(tmp_path, capsys, monkeypatch, no_debug):
    """A FutureWarning / UserWarning raised by a library inside a command stays off stderr."""
    import whisper_ft.models.registry as registry

    original = registry.list_offline_models

    def noisy(*args, **kwargs):  # what transformers/peft/torch do on import or load
        warnings.warn("noisy library deprecation", FutureWarning, stacklevel=2)
        warnings.warn("noisy library advice", UserWarning, stacklevel=2)
        warnings.warn_explicit("noisy peft rank_pattern", RuntimeWarning, "tuners_utils.py", 1,
                               module="peft.tuners.tuners_utils")
        warnings.warn_explicit("divide by zero", RuntimeWarning, "x.py", 1, module="whisper_ft.core.scoring")
        return original(*args, **kwargs)

    monkeypatch.setattr(registry, "list_offline_models", noisy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, _ = run_cli(["models", "--models_dir", str(tmp_path)], capsys)
    assert code == 0 and out
    assert [str(w.message) for w in caught if "noisy" in str(w.message)] == []
    assert [str(w.message) for w in caught if "divide" in str(w.message)] == ["divide by zero"]  # not a library's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, _ = run_cli(["models", "--models_dir", str(tmp_path), "--debug"], capsys)
    assert code == 0
    assert sorted(str(w.message) for w in caught if "noisy" in str(w.message)) == [
        "noisy library advice", "noisy library deprecation", "noisy peft rank_pattern"]


# --- interrupts ----------------------------------------------------------------------------------


def test_parallel_map_drops_queued_work_and_does_not_wait_for_a_stuck_item():
    """Closing the results (what Ctrl-C does) returns within about a second, although one item
    hangs (a stuck decoder or network file system), and no queued item starts afterwards."""
    from whisper_ft.data.common import parallel_map

    release = threading.Event()
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 1:
            release.wait(60)
        else:
            time.sleep(0.05)
        return i * 10

    try:
        results = parallel_map(work, range(200), num_workers=2)
        assert next(results) == 0
        t0 = time.monotonic()
        results.close()
        assert time.monotonic() - t0 < 2.0
        count = len(started)
        time.sleep(0.3)
        assert len(started) == count < 50
    finally:
        release.set()
    # Errors still reach the consumer, in order, and results keep the input order.
    assert list(parallel_map(lambda i: i * 2, range(50), num_workers=3)) == [i * 2 for i in range(50)]

    def fail_at_3(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for value in parallel_map(fail_at_3, range(20), num_workers=2):
            got.append(value)
    assert got == [0, 1, 2]


def _slow_probe_corpus(folder: Path, n: int = 400) -> tuple[Path, Path]:
    """A Kaldi folder of ``n`` 30 s AAC clips: libsndfile cannot read m4a headers, so each probe
    decodes the whole clip (tens of ms): the run takes many seconds, long enough to interrupt."""
    import av

    sr = 16_000
    t = np.arange(sr * 30) / sr
    samples = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None, :]
    first = folder / "wav" / "u0000.m4a"
    first.parent.mkdir(parents=True)
    with av.open(str(first), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    scp, text = [], []
    for i in range(n):
        path = folder / "wav" / f"u{i:04d}.m4a"
        if i:
            os.link(first, path)
        scp.append(f"u{i:04d} {path}\n")
        text.append(f"u{i:04d} hello\n")
    (folder / "wav.scp").write_text("".join(scp))
    (folder / "text").write_text("".join(text))
    return folder / "wav.scp", folder / "text"


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True),
                                             (signal.SIGTERM, True)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-to-group", "sigterm-to-group"])
def test_interrupted_prepare_stops_at_once_with_one_line_and_no_manifest(tmp_path, signum, to_group):
    """``to_group``: the whole process group signalled, as a terminal's Ctrl-C or a scheduler's
    ``kill -TERM -- -PGID`` does (every worker of the job gets it too)."""
    wav_scp, text = _slow_probe_corpus(tmp_path / "corpus")
    output = tmp_path / "out" / "train.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "whisper_ft", "prepare", "kaldi", "--wav_scp", str(wav_scp), "--text", str(text),
         "--output", str(output), "--num_workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
        # Ctrl-C as in a terminal: a suite started as a background job (`make test &`, nohup) has
        # SIGINT ignored, the child would inherit that and Python would never raise KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        start_new_session=to_group,  # a job of its own: the signal to its group reaches nothing else
    )
    err_chunks: list[bytes] = []
    probing = threading.Event()

    def read_stderr():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            err_chunks.append(chunk)
            if b"probing audio" in b"".join(err_chunks):
                probing.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert probing.wait(120), b"".join(err_chunks).decode()
        time.sleep(0.5)  # workers busy, most of the 400 clips still queued
        assert proc.poll() is None, "finished before the interrupt: make the corpus slower"
        sent = time.monotonic()
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if to_group:  # nothing of the job is left behind
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    reader.join(5)
    err = b"".join(err_chunks).decode()
    # The progress bar redraws with \r; what is left on each line is what a terminal shows.
    lines = [part.split("\r")[-1].strip() for part in err.split("\n")]
    assert code == 130, err
    assert [line for line in lines if line] == ["interrupted"], err
    assert took < 3.0, f"took {took:.1f} s to stop"
    assert proc.stdout.read() == b""
    assert not output.exists()
    assert not output.parent.exists() or not any(output.parent.iterdir())  # no temp file either

"""Run the real CLI as a job of its own and signal its whole process group, as Slurm, `timeout`,
systemd and a terminal's Ctrl-C do (`kill -TERM -- -PGID`): every process of the job gets the
signal, DataLoader workers included."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The progress bar of a training run once it has made at least one optimizer step.
TRAINING_STEP = re.compile(rb"training:[^\r\n]*\|\s*([1-9]\d*)/\d+")


@dataclass
class Stopped:
    code: int
    stdout: str
    stderr: str
    took: float  # seconds from the signal to the exit
    stragglers: bool  # processes of the group (e.g. DataLoader workers) still there 5 s after the exit


def signal_group_when(args: list[str], ready: re.Pattern, signum: int, *, cwd: Path, settle: float = 0.5,
                      start_timeout: float = 120, stop_timeout: float = 60) -> Stopped:
    """Start ``python -m whisper_ft ARGS`` in a new session (its own process group), wait until
    its stderr matches ``ready`` (and ``settle`` seconds more), send ``signum`` to the group."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "whisper_ft", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=cwd, start_new_session=True,
        # Ctrl-C as in a terminal: a suite started as a background job (`make test &`, nohup) has
        # SIGINT ignored, the child would inherit that and Python would never raise KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err_chunks: list[bytes] = []
    seen = threading.Event()

    def read_stderr():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            err_chunks.append(chunk)
            if not seen.is_set() and ready.search(b"".join(err_chunks)):
                seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        if not seen.wait(start_timeout):
            raise AssertionError(f"never saw {ready.pattern!r}:\n{b''.join(err_chunks).decode(errors='replace')}")
        time.sleep(settle)
        assert proc.poll() is None, "finished before the signal:\n" + b"".join(err_chunks).decode(errors="replace")
        sent = time.monotonic()
        os.killpg(proc.pid, signum)
        code = proc.wait(timeout=stop_timeout)
        took = time.monotonic() - sent
        stragglers = _group_alive(proc.pid, within=5.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)
    return Stopped(code, proc.stdout.read().decode(errors="replace"), b"".join(err_chunks).decode(errors="replace"),
                   took, stragglers)


def _group_alive(pgid: int, within: float) -> bool:
    """Whether some process of group ``pgid`` is still there after ``within`` seconds (then it is killed)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            return True
        time.sleep(0.1)

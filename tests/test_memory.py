"""whisper_ft.core.memory: large buffers are mmapped (and so given back when freed) once
release_large_buffers() ran, also after glibc's dynamic threshold would have moved them to the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = r"""
import ctypes, ctypes.util, os, sys
sys.path.insert(0, sys.argv[2])
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("skip"); sys.exit(0)

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "release":
    from whisper_ft.core.memory import release_large_buffers
    assert release_large_buffers()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(16 << 20))  # glibc's dynamic threshold rises to 16 MB on this free
before = libc.mallinfo2().hblkhd
block = libc.malloc(8 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


def mmapped_bytes_of_an_8mb_block(mode: str) -> int | None:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* variables of the caller
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(REPO)], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout.strip()
    return None if out == "skip" else int(out)


def test_large_buffers_are_mmapped_after_release_large_buffers():
    plain = mmapped_bytes_of_an_8mb_block("plain")
    if plain is None or not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallinfo2 is not available here")
    assert plain == 0  # glibc alone: the heap keeps it (what grew a training run to 5 GB)
    assert mmapped_bytes_of_an_8mb_block("release") >= 8 << 20


def test_a_users_threshold_is_left_alone(monkeypatch):
    from whisper_ft.core import memory

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert memory.release_large_buffers() is False

"""Give freed memory back to the operating system (glibc; elsewhere there is nothing to do).

glibc keeps freed heap memory for reuse. Two places where that costs a user gigabytes:

- a training step allocates and frees gigabytes of activations (batch 8 of 30 s windows for
  whisper-base: about 3 GB); glibc's dynamic mmap threshold rises to 32 MB after the first frees,
  so later buffers come from the heap, where they fragment: a LoRA run with ``--kl_to_base`` held
  4.5 GB between steps and peaked at 5.1 GB, against about 3 GB with ``MALLOC_MMAP_THRESHOLD_=4194304``
  (docs/benchmarks.md, adaptation to one voice). :func:`release_large_buffers` sets that threshold
  in the running process, so `whisper-ft finetune` needs no environment variable.
- a server's batches leave free memory in per-thread arenas: :func:`return_freed_memory` after each.
"""

from __future__ import annotations

import os

LARGE_BUFFER_BYTES = 4 * 1024 * 1024  # allocations from this size are mmapped, and unmapped when freed
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else False
        except OSError:  # not glibc (macOS, musl)
            _LIBC = False
    return _LIBC


def release_large_buffers(threshold: int = LARGE_BUFFER_BYTES) -> bool:
    """Serve allocations of ``threshold`` bytes and more by mmap from now on (freed: given back at
    once). A threshold the user set (``MALLOC_MMAP_THRESHOLD_``) is left alone. True if set."""
    libc = _libc()
    if not libc or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def return_freed_memory() -> None:
    """Give the free memory of every arena back to the OS (``malloc_trim(0)``)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)

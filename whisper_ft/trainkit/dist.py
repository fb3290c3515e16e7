"""Which process this is, under torchrun / accelerate launch (environment variables only).

Only the main process logs, prints results and writes shared files; the others train silently.
"""

from __future__ import annotations

import os

from whisper_ft.core.console import log


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def log_main(message: str) -> None:
    """:func:`whisper_ft.core.console.log`, on the main process only."""
    if is_main_process():
        log(message)


def one_thread_in_dataloader_worker() -> None:
    """In a DataLoader worker process: one torch thread (the trainer's process owns the cores)."""
    import torch

    if torch.utils.data.get_worker_info() is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)

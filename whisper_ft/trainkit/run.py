"""What every training run needs around the Trainer: its result, the CPU threads, the checkpoint to resume."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.errors import WhisperFtError
from whisper_ft.trainkit.dist import local_world_size


@dataclass
class FinetuneResult:
    run_dir: Path
    best_dir: Path | None  # None when no evaluation ran (e.g. interrupted before the first)
    best_metrics: dict | None
    global_step: int
    max_steps: int
    interrupted: bool
    last_checkpoint: Path | None
    is_main_process: bool = True  # False on the other processes of a multi-GPU run

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "best_dir": str(self.best_dir) if self.best_dir else None,
            "best_metrics": self.best_metrics,
            "global_step": self.global_step,
            "max_steps": self.max_steps,
            "interrupted": self.interrupted,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
        }


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads explicitly (shared between the processes of this machine)."""
    import torch

    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        num_threads = int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 1) // local_world_size())
    torch.set_num_threads(num_threads)
    return num_threads


def resolve_checkpoint(value: str | None, run_dir: Path) -> Path | None:
    """``None`` -> None; ``latest`` -> the newest checkpoint-N of the run; a path -> checked."""
    if not value:
        return None
    if value.lower() in {"latest", "last", "true"}:
        # The newest complete checkpoint: the Trainer writes trainer_state.json last, so a save cut
        # short (crash, power loss) is skipped rather than resumed from.
        complete = [p for p in run_dir.glob("checkpoint-*")
                    if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
        if not complete:
            raise WhisperFtError(f"--resume_from_checkpoint: no checkpoint-N folder in {run_dir} to resume from")
        return max(complete, key=lambda p: int(p.name.split("-")[-1]))
    path = Path(value)
    if not (path / "trainer_state.json").is_file():
        raise WhisperFtError(f"--resume_from_checkpoint: {path} is not a checkpoint folder (no trainer_state.json)")
    return path

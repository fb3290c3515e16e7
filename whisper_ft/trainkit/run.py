"""What every training run needs around the Trainer: its result, the CPU threads, the checkpoint to resume."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.errors import WhisperFtError
from whisper_ft.trainkit.dist import is_main_process, local_world_size, log_main


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


def train_and_report(trainer, interrupt, *, run_dir: Path, checkpoint: Path | None, best_marker: str,
                     best_metrics: dict | None, metrics_file: str, ignore_warnings: tuple[str, ...] = ()) -> FinetuneResult:
    """How every recipe's run ends: train under the interrupt guard (``interrupt`` is a
    :class:`~whisper_ft.trainkit.callbacks.GracefulInterrupt` added to ``trainer``), say how it
    stopped, and describe the run. ``best_marker``: the file that makes ``run_dir/best`` complete;
    ``best_metrics``: the best callback's (None: read from ``best/<metrics_file>`` of an earlier
    session); ``ignore_warnings``: message patterns the recipe knows to be harmless."""
    import json
    import warnings

    with interrupt, warnings.catch_warnings():
        for pattern in ignore_warnings:
            warnings.filterwarnings("ignore", message=pattern)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    state = trainer.state
    last = run_dir / f"checkpoint-{state.global_step}"
    if interrupt.interrupted:
        log_main(f"interrupted at step {state.global_step}; resume with --resume_from_checkpoint {last}")
    elif interrupt.requested:
        log_main(f"the interrupt came during the last step: the run completed ({state.global_step} steps)")
    best_dir = run_dir / "best"
    has_best = (best_dir / best_marker).is_file()
    if best_metrics is None and has_best:
        try:
            best_metrics = json.loads((best_dir / metrics_file).read_text())
        except (OSError, ValueError):
            best_metrics = None
    return FinetuneResult(run_dir=run_dir, best_dir=best_dir if has_best else None, best_metrics=best_metrics,
                          global_step=state.global_step, max_steps=state.max_steps,
                          interrupted=interrupt.interrupted, last_checkpoint=last if last.is_dir() else None,
                          is_main_process=is_main_process())

"""What every training run needs around the Trainer: its result, the CPU threads, the run folder
(a second run never mixes into the first: :func:`claim_run_dir`), the checkpoint to resume
(only one whose save finished: :func:`resolve_checkpoint`) and how it ends (:func:`train_and_report`).
The skeleton that puts these together is :mod:`whisper_ft.trainkit.skeleton`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.console import warn
from whisper_ft.core.errors import WhisperFtError
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


CHECKPOINT_MARKER = "whisper_ft_checkpoint.json"  # written last into a checkpoint-N (callbacks.CheckpointComplete)
LATEST = {"latest", "last", "true"}
RUN_LEFTOVERS = {"runs", "encoder_cache", "base_metrics.json"}  # what a run writes before its first checkpoint


def _step(path: Path) -> int | None:
    tail = path.name.split("-")[-1]
    return int(tail) if path.name.startswith("checkpoint-") and tail.isdigit() else None


def complete_checkpoints(run_dir: Path, *, say_skipped: bool = False) -> list[Path]:
    """The run's checkpoint-N folders whose save finished (they hold the marker), oldest first."""
    found = sorted((p for p in Path(run_dir).glob("checkpoint-*") if p.is_dir() and _step(p) is not None), key=_step)
    complete = [p for p in found if (p / CHECKPOINT_MARKER).is_file()]
    if say_skipped:
        for p in found:
            if p not in complete:
                warn(f"skipping {p}: its save did not finish (no {CHECKPOINT_MARKER})")
    return complete


def resolve_checkpoint(value: str | None, run_dir: Path) -> Path | None:
    """``None`` -> None; ``latest`` -> the newest complete checkpoint-N of the run; a path -> checked.

    Only checkpoints holding :data:`CHECKPOINT_MARKER` count: it is written after the Trainer and
    our callbacks wrote everything else, so a save cut short (disk full, crash) is never resumed from."""
    if not value:
        return None
    if value.lower() in LATEST:
        complete = complete_checkpoints(run_dir, say_skipped=is_main_process())
        if not complete:
            raise WhisperFtError(f"--resume_from_checkpoint: no checkpoint-N folder in {run_dir} to resume from "
                                 "(none whose save finished)")
        return complete[-1]
    path = Path(value)
    if not (path / "trainer_state.json").is_file():
        raise WhisperFtError(f"--resume_from_checkpoint: {path} is not a checkpoint folder (no trainer_state.json)")
    if not (path / CHECKPOINT_MARKER).is_file():
        raise WhisperFtError(f"--resume_from_checkpoint: {path} is incomplete (its save did not finish: no "
                             f"{CHECKPOINT_MARKER}); resume from an earlier checkpoint-N, or with 'latest'")
    return path


def holds_run(folder: Path, config_file: str) -> bool:
    """Whether ``folder`` holds a training run: checkpoint-N/, best/ or the run config."""
    return (any(p.is_dir() for p in folder.glob("checkpoint-*")) or (folder / "best").exists()
            or (folder / config_file).is_file())


def _foreign(folder: Path) -> list[str]:
    """What in a folder that holds no run is not a run's own leftovers (a model, a user's files)."""
    if not folder.is_dir():
        return [folder.name] if folder.exists() or folder.is_symlink() else []
    return sorted(p.name for p in folder.iterdir() if p.name not in RUN_LEFTOVERS)


def claim_run_dir(run_dir: Path, *, config_file: str, resume: str | None, overwrite: bool, explicit: bool) -> Path:
    """The folder this run writes to, decided before any model loads.

    A folder that already holds a run is continued (``resume``), replaced (``overwrite``: its
    checkpoints and best/ go, see :func:`remove_earlier_run`), left alone for a fresh sibling
    ``<name>-2``, ``-3`` ... (``explicit`` False: the user named no output folder), or refused. A
    folder of other things (a model, files) is never trained into."""
    run_dir = Path(run_dir)
    if resume:
        if resume.lower() in LATEST and not explicit:
            return _newest_run(run_dir, config_file)
        return run_dir
    taken = holds_run(run_dir, config_file) if run_dir.is_dir() else False
    foreign = [] if taken else _foreign(run_dir)
    if not taken and not foreign:
        return run_dir
    if taken and overwrite:
        return run_dir
    if not explicit:
        n = 2
        while True:
            fresh = run_dir.with_name(f"{run_dir.name}-{n}")
            if not (fresh.is_dir() and holds_run(fresh, config_file)) and not _foreign(fresh):
                break
            n += 1
        log_main(f"{run_dir} already holds {'a run' if taken else 'other files'}: this run goes to {fresh} "
                 "(--overwrite_output_dir replaces an earlier run, --resume_from_checkpoint continues it)")
        return fresh
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise WhisperFtError(f"run folder {run_dir} is not a training run (it holds {shown}): choose another "
                             "--output_dir")
    raise WhisperFtError(f"run folder {run_dir} already holds a run (checkpoint-N/, best/): pass "
                         "--resume_from_checkpoint to continue it, --overwrite_output_dir to replace it, or choose "
                         "another --output_dir")


def _newest_run(run_dir: Path, config_file: str) -> Path:
    """``latest`` with the default folder: the run (``<name>`` or ``<name>-N``) saved most recently."""
    siblings = [p for p in run_dir.parent.glob(f"{run_dir.name}-*") if p.name[len(run_dir.name) + 1:].isdigit()]
    saved = {}
    for folder in [run_dir, *siblings]:
        complete = complete_checkpoints(folder)
        if complete:
            saved[folder] = (complete[-1] / CHECKPOINT_MARKER).stat().st_mtime
    if not saved:
        return run_dir
    newest = max(saved, key=saved.get)
    if newest != run_dir:
        log_main(f"--resume_from_checkpoint: the newest run of this model is {newest}")
    return newest


def remove_earlier_run(run_dir: Path) -> None:
    """``--overwrite_output_dir``: remove the earlier run's checkpoints and best/ (main process only)."""
    import shutil

    old = sorted(p for p in run_dir.glob("checkpoint-*") if p.is_dir()) + [p for p in [run_dir / "best"] if p.exists()]
    if not old or not is_main_process():
        return
    log_main(f"--overwrite_output_dir: removing the earlier run's {', '.join(p.name for p in old)} from {run_dir}")
    for p in old:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


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


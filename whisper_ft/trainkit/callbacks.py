"""Trainer callbacks both recipes use: Ctrl-C, the progress bar; and the best value kept in best/.

- :class:`GracefulInterrupt` turns the first Ctrl-C (or SIGTERM) into "save a checkpoint after this
  step and stop"; a second one aborts at once.
- :class:`ProgressBar` shows steps, loss, learning rate and ETA on stderr, and one line per
  evaluation.
- :class:`CheckpointComplete` marks each checkpoint-N complete once everything in it is written
  (``--resume_from_checkpoint latest`` uses only marked ones).
- :class:`KeepBest` keeps ``best/`` = the best evaluation so far; each recipe says how it saves
  and which evaluations may count (its best-model rule).
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

from whisper_ft.trainkit.settings import METRICS_FILE


def previous_best_value(best_dir: Path, metric: str) -> float | None:
    """The metric stored in an existing best/ (used when resuming a run)."""
    try:
        data = json.loads((Path(best_dir) / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return float(data["value"]) if data.get("metric") == metric and "value" in data else None


class KeepBest(TrainerCallback):
    """Keeps ``best_dir`` = the run at the evaluation with the lowest ``eval_<metric>`` so far.

    A recipe subclasses it: :meth:`save` writes its model (aside, then renamed into place);
    :meth:`evaluation_done` may wait for more metrics (several evaluation sets) and
    :meth:`candidate` may refuse an evaluation (a bound on the general sets). ``best`` starts at
    the previous best of a resumed run (:func:`previous_best_value`)."""

    def __init__(self, best_dir: Path, metric: str, run_config: dict, previous_best: float | None = None):
        self.best_dir = Path(best_dir)
        self.metric = metric
        self.run_config = run_config
        self.best = previous_best
        self.best_metrics: dict | None = None

    def evaluation_done(self, metrics: dict, state) -> dict | None:
        """The evaluation's metrics once complete; None while more are to come."""
        return metrics

    def candidate(self, metrics: dict, state) -> bool:
        """Whether this evaluation may become best/ (besides beating the best value)."""
        return True

    def describe(self, model) -> dict:
        """More to record in the best metrics (e.g. the adapter ranks)."""
        return {}

    def save(self, model) -> None:
        raise NotImplementedError

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        metrics = self.evaluation_done(dict(metrics or {}), state)
        if metrics is None:
            return
        value = metrics.get(f"eval_{self.metric}")
        if value is None or not math.isfinite(value) or not self.candidate(metrics, state):
            return
        if self.best is not None and value >= self.best:
            return
        self.best = value
        self.best_metrics = {"metric": self.metric, "value": value, "step": state.global_step, "epoch": state.epoch,
                             **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                             **self.describe(model)}
        if state.is_world_process_zero:
            from whisper_ft.trainkit.dist import log_main

            self.save(model)
            log_main(f"new best {self.metric} {value:.4f} at step {state.global_step} -> {self.best_dir}")


class GracefulInterrupt(TrainerCallback):
    """First Ctrl-C or SIGTERM: checkpoint after the current optimizer step and stop. Second: abort now.

    Use as a context manager around ``trainer.train()`` (installs the SIGINT and SIGTERM handlers;
    the main thread only, which is where the CLI runs). DataLoader workers forked while the
    handlers are installed inherit them and ignore what the job's whole process group receives
    (Ctrl-C, a scheduler's SIGTERM; see :mod:`whisper_ft.trainkit.workers`): this process decides.

    An interrupt during the last step stops nothing: that step ends the run anyway, with its
    evaluation, and :attr:`interrupted` stays False.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self.finished = False  # the last step was reached: the run completed
        self._previous: dict = {}
        self._pid: int | None = None

    @property
    def interrupted(self) -> bool:
        """The run stopped early because of an interrupt (not: an interrupt came as it finished)."""
        return self.requested and not self.finished

    def _handler(self, signum, frame):
        import os

        if os.getpid() != self._pid:  # a forked DataLoader worker: the main process decides
            from whisper_ft.trainkit.workers import absorb_in_worker

            absorb_in_worker(signum)
            return
        if self.requested:
            for sig in self.SIGNALS:
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = True
        what = "interrupt" if signum == signal.SIGINT else f"{signal.Signals(signum).name}"
        print(f"\n{what}: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def __enter__(self):
        import os
        import threading

        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        return False

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            self.finished = True  # the Trainer stops, saves and evaluates here anyway
            return control
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False
            self.stopped_at = state.global_step
        return control


class ProgressBar(TrainerCallback):
    """A tqdm bar on stderr: optimizer steps with loss, learning rate and ETA."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}", refresh=False)
        elif any(k.startswith("eval_") for k in logs):
            shown = {k[5:]: v for k, v in logs.items()
                     if k.startswith("eval_") and k.rsplit("_", 1)[-1] in ("loss", "cer", "wer") and isinstance(v, float)}
            text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
            self.bar.write(f"step {state.global_step}: eval {text}", file=sys.stderr)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CheckpointComplete(TrainerCallback):
    """Writes :data:`~whisper_ft.trainkit.run.CHECKPOINT_MARKER` into each checkpoint-N once it is complete.

    ``on_save`` runs after the Trainer wrote the checkpoint (weights, optimizer, trainer_state.json)
    and after the callbacks added before this one (e.g. the processor files): add it last. The files
    are flushed to disk first, so a crash cannot keep the marker and lose the data. A save that
    raised (disk full) never gets here: that checkpoint stays unmarked, and ``latest`` skips it.
    """

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import os

        from whisper_ft.models.output_dir import write_json
        from whisper_ft.trainkit.run import CHECKPOINT_MARKER

        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        files = {}
        for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != CHECKPOINT_MARKER):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            files[str(path.relative_to(checkpoint))] = path.stat().st_size
        write_json(checkpoint / CHECKPOINT_MARKER, {"step": state.global_step, "files": files})

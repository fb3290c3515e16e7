"""DataLoader worker processes and the signals a job runner sends to the whole process group.

Slurm, ``timeout``, systemd, ``kill -TERM -- -PGID`` and Ctrl-C in a terminal signal every process
of the job, the DataLoader workers included. A worker that dies of it makes the main process fail
with "DataLoader worker (pid N) is killed by signal" before it can save a checkpoint; one that
handles it like the main process prints the interrupt notice once more per worker. So the workers
ignore SIGINT and the first SIGTERM, and the main process decides
(:class:`~whisper_ft.trainkit.callbacks.GracefulInterrupt`: a checkpoint after this step, then
stop; the workers are shut down with their loader). A second SIGTERM still ends a worker: torch
terminates a worker that does not stop when asked, and a job runner that insists is obeyed.

A worker is forked with SIGINT and SIGTERM blocked, so one that comes while it starts (before its
``worker_init_fn``, when torch's own C handler for SIGTERM or the main process's handlers are in
place) waits until the worker ignores it. Both recipes' Trainers take :class:`WorkersIgnoreJobSignals` as their
first base class; a DataLoader built by hand goes through :func:`protect_workers`.
"""

from __future__ import annotations

import signal

JOB_SIGNALS = frozenset(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
_CAN_MASK = hasattr(signal, "pthread_sigmask")


def _ignore_first_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one ends the worker


def ignore_job_signals() -> None:
    """In a worker process: SIGINT ignored; the first SIGTERM ignored, the next one ends it. Then the
    signals blocked while the worker started are let through (to these handlers)."""
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _ignore_first_sigterm)
    if _CAN_MASK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_SIGNALS)


def absorb_in_worker(signum: int) -> None:
    """In a worker, a job signal that came through a handler inherited from the main process (a
    loader not made by :func:`protect_workers`): ignored as :func:`ignore_job_signals` would have,
    and the worker switched to it."""
    ignore_job_signals()
    if signum == getattr(signal, "SIGTERM", None):
        _ignore_first_sigterm(signum, None)


class IgnoreJobSignals:
    """A DataLoader ``worker_init_fn``: :func:`ignore_job_signals`, then ``then(worker_id)`` (the
    loader's own, e.g. the Trainer's seeding). A class, not a closure: it pickles for spawned workers."""

    def __init__(self, then=None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        ignore_job_signals()
        if self.then is not None:
            self.then(worker_id)


class _StartWorkersMasked:
    """In place of a DataLoader's ``_get_iterator`` (which forks its workers): the job signals are
    blocked meanwhile, so the workers start with them blocked; this process gets them right after."""

    def __init__(self, get_iterator) -> None:
        self.get_iterator = get_iterator

    def __call__(self):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)
        try:
            return self.get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def protect_workers(loader):
    """``loader`` with its workers (if any) ignoring the job's signals; its own worker_init_fn kept.

    An accelerate ``DataLoaderShard`` (what the Trainer hands out) iterates the DataLoader it
    wraps: that one is changed."""
    inner = vars(loader).get("base_dataloader", loader)
    if not getattr(inner, "num_workers", 0) or isinstance(inner.worker_init_fn, IgnoreJobSignals):
        return loader
    inner.worker_init_fn = IgnoreJobSignals(inner.worker_init_fn)
    if _CAN_MASK and callable(getattr(inner, "_get_iterator", None)):
        inner._get_iterator = _StartWorkersMasked(inner._get_iterator)
    return loader


class WorkersIgnoreJobSignals:
    """Mixin for a ``transformers.Trainer``: the workers of every DataLoader it builds (training,
    evaluation, prediction) ignore the signals sent to the whole job (see the module docstring)."""

    def get_train_dataloader(self, *args, **kwargs):
        return protect_workers(super().get_train_dataloader(*args, **kwargs))

    def get_eval_dataloader(self, *args, **kwargs):
        return protect_workers(super().get_eval_dataloader(*args, **kwargs))

    def get_test_dataloader(self, *args, **kwargs):
        return protect_workers(super().get_test_dataloader(*args, **kwargs))

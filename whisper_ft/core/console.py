"""Logs and progress go to stderr; results go to stdout (so `whisper-ft ... > out.json` works)."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """One informational line on stderr (written at once: a Ctrl-C never leaves it without its newline)."""
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    log(f"warning: {message}")


def progress(iterable, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False):
    """A tqdm progress bar on stderr (tqdm comes with transformers/datasets)."""
    from tqdm.auto import tqdm

    # Not a terminal (CI logs, pipes): redraw rarely instead of flooding the log.
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                dynamic_ncols=True, leave=False, mininterval=0.1 if interactive else 30.0)

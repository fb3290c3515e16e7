"""Report folders (``eval``, ``compare``): a failed run leaves no empty folder behind.

``eval`` and ``compare`` create their output folder before decoding (so an unwritable path fails
in seconds, not after an hour). :func:`removed_if_failed` notes which folders on the way to it do
not exist yet and, if the run then fails (an error, Ctrl-C), removes those of them still empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    p = Path(path).absolute()
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


@contextlib.contextmanager
def removed_if_failed(path: str | Path) -> Iterator[Path]:
    """Run the body; if it raises, remove the folders it created on the way to ``path`` that are still empty."""
    created = _missing_folders(Path(path))
    try:
        yield Path(path)
    except BaseException:
        for folder in created:  # deepest first; stop at the first that holds something
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break
        raise

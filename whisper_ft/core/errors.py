"""User-facing errors.

Library code raises :class:`WhisperFtError` for anything the user can fix (bad path, bad option,
invalid data). The CLI prints its message as one line on stderr and exits 1, with no traceback
unless ``--debug`` or ``WHISPER_FT_DEBUG=1``. Messages say what is wrong *and* how to fix it.
"""

from __future__ import annotations


class WhisperFtError(Exception):
    """An error caused by user input, with a one-line message that says how to fix it."""

    exit_code = 1


class DataError(WhisperFtError):
    """Invalid or missing data: manifests, audio files, archives."""


class ModelNotFoundError(WhisperFtError):
    """A model name or folder that cannot be resolved."""

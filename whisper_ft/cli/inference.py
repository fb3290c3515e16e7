"""`whisper-ft` inference commands."""

from __future__ import annotations

from whisper_ft.cli import app  # noqa: F401

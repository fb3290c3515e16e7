"""`whisper-ft prepare ...`: corpora -> manifests (see whisper_ft.data)."""

from __future__ import annotations

import typer

from whisper_ft.cli import app

prepare_app = typer.Typer(help="Prepare a corpus into train/dev/test manifests (JSON Lines).", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")

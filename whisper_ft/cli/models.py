"""`whisper-ft models ...`: list offline models, import CTranslate2 folders."""

from __future__ import annotations

import typer

from whisper_ft.cli import app

models_app = typer.Typer(help="List the models available offline; import CTranslate2 models.", invoke_without_command=True)
app.add_typer(models_app, name="models")

"""`whisper-ft models ...`: list offline models, import CTranslate2 models."""

from __future__ import annotations

from pathlib import Path

import typer

from whisper_ft.cli import app

models_app = typer.Typer(
    help="List the models available offline (bare `whisper-ft models`); import CTranslate2 models.",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def list_models(
    ctx: typer.Context,
    models_dir: Path = typer.Option(Path("models"), "--models_dir", help="Folder with your runs and models."),
) -> None:
    """List bundled models and the model folders under models/."""
    if ctx.invoked_subcommand is not None:
        return
    from whisper_ft.models.registry import list_offline_models

    rows = list_offline_models(models_dir)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.kind:<8} {r.note or r.path}")


@models_app.command("import")
def import_model(
    ct2_dir: Path = typer.Argument(..., help="A CTranslate2/faster-whisper Whisper folder (model.bin, tokenizer.json)."),
    out_dir: Path = typer.Argument(..., help="Where to write the transformers model."),
    force: bool = typer.Option(False, "--force", help="Replace OUT_DIR if it is a model folder whisper-ft wrote."),
) -> None:
    """Import a CTranslate2 Whisper model into transformers format (model + processor + generation config)."""
    from whisper_ft.core.console import log
    from whisper_ft.models.ct2_import import import_ct2_model
    from whisper_ft.models.output_dir import check_output_dir

    check_output_dir(out_dir, force=force, sources=[(ct2_dir, "the CTranslate2 model being imported")], option="OUT_DIR")
    out = import_ct2_model(ct2_dir, out_dir)
    log(f"imported {ct2_dir} -> {out}")
    print(out)

"""`whisper-ft card` and `whisper-ft push`: parse options, call whisper_ft.workflows.publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from whisper_ft.cli import app

_MODEL_HELP = "A model folder: a run's best/ (adapter or full fine-tune), a merged model or a converted (CTranslate2) folder."
_EVAL_HELP = "An `eval` report.json (or its folder) whose result goes into the card's model-index; repeatable."
_COMPARE_HELP = "A `compare` report.json (or its folder): its table goes into the card, this model's rows into the model-index."
_COMPARE_MODEL_HELP = "Which model of --compare_report this folder is (its label or name; default: the last one)."


@app.command("card")
def card_cmd(
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    eval_report: Optional[list[Path]] = typer.Option(None, "--eval_report", help=_EVAL_HELP),
    compare_report: Optional[Path] = typer.Option(None, "--compare_report", help=_COMPARE_HELP),
    compare_model: Optional[str] = typer.Option(None, "--compare_model", help=_COMPARE_MODEL_HELP),
) -> None:
    """Write (or refresh) a model folder's README.md model card; a README you wrote is never replaced."""
    from whisper_ft.workflows.publish import update_card

    written = update_card(model, eval_reports=eval_report or [], compare_report=compare_report,
                          compare_model=compare_model)
    if written is not None:
        print(written)


@app.command("push")
def push_cmd(
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    repo_id: str = typer.Option(..., "--repo_id", help="Hub repository: NAME or OWNER/NAME (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token with write access (default: HF_TOKEN, "
                                                              "else the one `hf auth login` stored)."),
    eval_report: Optional[list[Path]] = typer.Option(None, "--eval_report", help=_EVAL_HELP),
    compare_report: Optional[Path] = typer.Option(None, "--compare_report", help=_COMPARE_HELP),
    compare_model: Optional[str] = typer.Option(None, "--compare_model", help=_COMPARE_MODEL_HELP),
    commit_message: Optional[str] = typer.Option(None, "--commit_message", help="The hub commit's message."),
) -> None:
    """Upload a model folder (with its model card) to the Hugging Face hub (HF_ENDPOINT for a mirror)."""
    from whisper_ft.core.console import log
    from whisper_ft.workflows.publish import push_folder

    result = push_folder(model, repo_id, private=private, token=token, commit_message=commit_message,
                         eval_reports=eval_report or [], compare_report=compare_report, compare_model=compare_model)
    log(f"pushed {result.files} files to {result.url}")
    print(json.dumps(result.to_dict()))

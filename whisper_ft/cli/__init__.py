"""The `whisper-ft` command line: a thin layer that parses options and calls library functions.

Heavy imports (torch, transformers, ctranslate2) happen inside the commands, so `--help` is
instant. Errors the user can fix are one line on stderr and exit code 1 (2 for usage errors);
``--debug`` or ``WHISPER_FT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(
    name="whisper-ft",
    help="Fine-tune Whisper with LoRA, evaluate it honestly, and serve it fast with CTranslate2.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _debug_enabled() -> bool:
    return os.environ.get("WHISPER_FT_DEBUG", "").lower() in {"1", "true", "yes"}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    offline: bool = typer.Option(
        False, "--offline", help="Never contact the Hugging Face hub (same as HF_HUB_OFFLINE=1)."
    ),
) -> None:
    if debug:
        os.environ["WHISPER_FT_DEBUG"] = "1"
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["WHISPER_FT_OFFLINE"] = "1"


# Each module registers its own commands on `app` (import order = order in --help).
from whisper_ft.cli import inference as _inference  # noqa: E402,F401
from whisper_ft.cli import models as _models  # noqa: E402,F401
from whisper_ft.cli import prepare as _prepare  # noqa: E402,F401
from whisper_ft.cli import train as _train  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Console entry point with whisper-ft's error policy."""
    from whisper_ft.errors import WhisperFtError

    # Typer >= 0.20 vendors its own click (typer._click); older ones use click itself.
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import ClickException

    if "--debug" in (argv if argv is not None else sys.argv[1:]):
        os.environ["WHISPER_FT_DEBUG"] = "1"
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="whisper-ft", standalone_mode=False)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except ClickException as exc:  # usage errors: bad option, missing argument -> exit 2
        if _debug_enabled():
            raise
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"error: {exc.format_message()}{where}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except WhisperFtError as exc:
        if _debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug or an environment problem: still one line by default
        if _debug_enabled():
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)

"""The `whisper-ft` command line: a thin layer that parses options and calls library functions.

Heavy imports (torch, transformers, ctranslate2) happen inside the commands, so `--help` is
instant. Errors the user can fix are one line on stderr and exit code 1 (2 for usage errors);
``--debug`` or ``WHISPER_FT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

import typer


def _flags_show_no_type() -> None:
    """Typer 0.29 prints every option's type in --help, ``<bool>`` for flags too: that reads as
    "takes a value", and ``--vad true`` then passes "true" on as an input file. Flags (every bool
    option here, ``--help`` included) show no type, as in click."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_flags_without_type", False):
        return

    def display_type_rich(self, ctx):
        if self.is_flag and not self.count and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._flags_without_type = True
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_type()

app = typer.Typer(
    name="whisper-ft",
    help="Fine-tune Whisper with LoRA, evaluate it honestly, and serve it fast with CTranslate2.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


GLOBAL_FLAGS = ("--debug", "--offline")  # accepted anywhere on the command line, not only first


def _debug_enabled() -> bool:
    return os.environ.get("WHISPER_FT_DEBUG", "").lower() in {"1", "true", "yes"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("whisper-ft")
    except PackageNotFoundError:  # a source tree that was never installed
        from whisper_ft import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        print(f"whisper-ft {_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (anywhere on the command "
                                                      "line)."),
    offline: bool = typer.Option(
        False, "--offline", help="Never contact the Hugging Face hub (same as HF_HUB_OFFLINE=1; anywhere on the "
                                 "command line)."
    ),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if debug:
        os.environ["WHISPER_FT_DEBUG"] = "1"
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["WHISPER_FT_OFFLINE"] = "1"


# Each module registers its own commands on `app` (import order = order in --help, hence I001).
from whisper_ft.cli import inference as _inference  # noqa: E402,F401,I001
from whisper_ft.cli import transcribe as _transcribe  # noqa: E402,F401
from whisper_ft.cli import compare as _compare  # noqa: E402,F401
from whisper_ft.cli import models as _models  # noqa: E402,F401
from whisper_ft.cli import doctor as _doctor  # noqa: E402,F401
from whisper_ft.cli import prepare as _prepare  # noqa: E402,F401
from whisper_ft.cli import train as _train  # noqa: E402,F401
from whisper_ft.cli import publish as _publish  # noqa: E402,F401
from whisper_ft.cli import llm as _llm  # noqa: E402,F401
from whisper_ft.cli import serve as _serve  # noqa: E402,F401


def _hoist_global_flags(args: list[str]) -> list[str]:
    """Move ``--debug``/``--offline`` in front of the subcommand, wherever they were typed.

    Every "rerun with --debug" hint invites appending it; click only knows them before the
    subcommand. Arguments after a ``--`` separator are left alone.
    """
    end = args.index("--") if "--" in args else len(args)
    found = [a for a in args[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in args[:end] if a not in GLOBAL_FLAGS]
    return list(dict.fromkeys(found)) + rest + args[end:]


def _quiet_warnings() -> None:
    """Library deprecation notes and UserWarnings are for developers: hidden unless --debug.

    whisper-ft's own warnings are ``warning: ...`` lines (whisper_ft.core.console), not Python warnings.
    """
    import warnings

    for category in (UserWarning, FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    # e.g. peft's "rank_pattern keys did not match" on AdaLoRA checkpoints; numpy's stay visible.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"(peft|transformers|torch|accelerate)(\.|$)")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (kill, a scheduler's timeout, docker stop) stops a command like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """Console entry point with whisper-ft's error policy."""
    from whisper_ft.core.errors import WhisperFtError

    # Typer >= 0.20 vendors its own click (typer._click); older ones use click itself.
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import ClickException, NoArgsIsHelpError

    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    if "--debug" in args:
        os.environ["WHISPER_FT_DEBUG"] = "1"
    if not _debug_enabled():
        _quiet_warnings()
    command = typer.main.get_command(app)
    try:
        # Not command.main(): typer's main turns Ctrl-C into a silent exit code; the policy is here.
        with _sigterm_as_ctrl_c(), command.make_context("whisper-ft", args) as ctx:
            rv = command.invoke(ctx)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:  # bare `whisper-ft` / `whisper-ft prepare`: the help (already printed
        message = exc.format_message()  # by typer's rich formatter; plain click returns it instead)
        if message.strip():
            print(message)
        sys.exit(0)
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
    except BrokenPipeError:  # `whisper-ft ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)
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

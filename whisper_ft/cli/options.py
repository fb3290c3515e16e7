"""Command options made from the settings dataclasses, so each option is written once (its field).

:func:`options_from` turns the ``setting(...)`` fields of settings dataclasses into the typer
options of a command: the flag (``--<field>`` or the field's ``option``), default, help text, type
and the CLI-only details the field carries (``metavar``, ``cli_type``, ``cli_default``,
``cli_note``, ``cli_help``, ``required``, ``announce``). The command receives the parsed values as
:class:`ParsedOptions` and builds its settings with :meth:`ParsedOptions.settings`; the settings
validate themselves, so a bad value is the usual one-line error.

:class:`OptionalValueCommand` lets ``--resume_from_checkpoint`` be given without a value.
Imports nothing heavy: commands are built when ``whisper-ft`` starts.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Callable

import typer
from typer.core import TyperCommand

OPTIONAL_VALUE = {"--resume_from_checkpoint": "latest"}  # option -> value when given bare

_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "tuple[str, ...]": str}


class OptionalValueCommand(TyperCommand):
    """Lets ``--resume_from_checkpoint`` be given without a path (= the latest checkpoint)."""

    def parse_args(self, ctx, args):
        args = list(args)
        for i, arg in enumerate(args):
            if arg in OPTIONAL_VALUE and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args[i] = f"{arg}={OPTIONAL_VALUE[arg]}"
        return super().parse_args(ctx, args)


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def _cli_type(f) -> Any:
    """The option's type: the field's ``cli_type``, else its annotation without ``| None``."""
    if "cli_type" in f.metadata:
        return f.metadata["cli_type"]
    name = str(f.type).replace(" | None", "").replace("None | ", "").strip()
    if name not in _TYPES:
        raise TypeError(f"field {f.name}: give setting(..., cli_type=...) for its type {f.type!r}")
    return _TYPES[name]


class OptionSpec:
    """One command option and the settings field it fills."""

    def __init__(self, section: type, f) -> None:
        self.section, self.field = section, f.name
        self.flag = f.metadata.get("option") or f"--{f.name}"
        self.param = self.flag.lstrip("-")
        self.type = _cli_type(f)
        self.default = _default(f)
        self.announce = bool(f.metadata.get("announce"))
        self.repeatable = getattr(self.type, "__origin__", None) is list
        meta = f.metadata
        shown = ",".join(self.default) if isinstance(self.default, tuple) else self.default
        help_text = meta.get("cli_help") or meta["help"]
        if meta.get("cli_note"):
            help_text += meta["cli_note"].format(default=shown)
        cli_default = ... if meta.get("required") else meta.get("cli_default", shown)
        if self.repeatable and isinstance(cli_default, str):
            cli_default = [cli_default]
        extra = {"metavar": meta["metavar"]} if meta.get("metavar") else {}
        self.option = typer.Option(cli_default, self.flag, help=help_text, hidden=bool(meta.get("hidden")), **extra)


class ParsedOptions:
    """The values a generated command was given, by option name (``lora_r``), and the settings built from them."""

    def __init__(self, values: dict[str, Any], specs: list[OptionSpec]) -> None:
        self.values = values
        self.specs = specs

    def __getitem__(self, param: str) -> Any:
        return self.values[param]

    def settings(self, section: type, **overrides):
        """``section`` from the options that set its fields (the rest keep their defaults), plus
        ``overrides``. A repeatable option given once passes one value; an unset ``announce`` one
        takes its default and says so on stderr."""
        kwargs = {}
        for spec in self.specs:
            if spec.section is not section or spec.field in overrides:
                continue
            value = self.values[spec.param]
            if spec.repeatable:
                value = (value[0] if len(value) == 1 else list(value)) if value else None
            if value is None and spec.announce:
                from whisper_ft.core.console import log

                value = spec.default
                log(f"no {spec.flag} given: using {value}")
            kwargs[spec.field] = value
        return section(**{**kwargs, **overrides})


def options_from(*sections: type, skip: tuple[str, ...] = ()) -> Callable:
    """Decorator: the command takes one option per settings field of ``sections`` (in that order;
    nested settings dataclasses and the fields named in ``skip`` left out) and is called with
    :class:`ParsedOptions`."""
    specs = [OptionSpec(section, f) for section in sections for f in fields(section)
             if f.name not in skip and not is_dataclass(f.default_factory)]
    names = [s.param for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TypeError(f"options given twice: {', '.join(duplicated)}")

    def decorate(func: Callable[[ParsedOptions], Any]) -> Callable:
        def command(**values):
            return func(ParsedOptions(values, specs))

        command.__name__, command.__qualname__ = func.__name__, func.__qualname__
        command.__doc__, command.__module__ = func.__doc__, func.__module__
        command.__annotations__ = {s.param: s.type for s in specs}
        command.__signature__ = inspect.Signature(
            [inspect.Parameter(s.param, inspect.Parameter.KEYWORD_ONLY, default=s.option, annotation=s.type)
             for s in specs])
        return command

    return decorate

"""``compare``'s inputs, parsed and checked before anything is decoded.

Every model must resolve (an adapter's base too) and every test manifest must read, be non-empty
and have its audio files, so that a typo costs one error line instead of an hour of decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import DataError, WhisperFtError
from whisper_ft.core.manifest import Utterance, read_manifest

_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class TestSet:
    name: str
    path: Path
    utterances: tuple[Utterance, ...] = ()

    __test__ = False  # not a pytest class


def parse_models(spec: str | list[str]) -> list[str]:
    """``"base,models/tuned"`` (or a list of such strings) -> ``["base", "models/tuned"]``."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    names = [name.strip() for part in parts for name in str(part).split(",")]
    if any(not n for n in names):
        raise WhisperFtError(f"--models {','.join(parts)!r} has an empty entry: give comma-separated model "
                             "names or folders, e.g. --models base,models/whisper-base-finetune")
    if len(names) < 2:
        raise WhisperFtError(f"--models needs at least two models, the first being the reference "
                             f"(got {names[0] if names else 'none'}), e.g. --models base,models/whisper-base-finetune")
    return names


def parse_test_data(specs: list[str]) -> list[tuple[str, Path]]:
    """``["domain=dataset/test.jsonl", "en.jsonl"]`` -> ``[("domain", ...), ("en", Path("en.jsonl"))]``.

    A bare path is named after its file stem. Names must be unique."""
    if not specs:
        raise WhisperFtError("no --test_data given: pass at least one, e.g. --test_data domain=dataset/test.jsonl")
    out: list[tuple[str, Path]] = []
    for spec in specs:
        spec = str(spec).strip()
        if "=" in spec and not Path(spec).is_file():
            name, _, path = spec.partition("=")
            name, path = name.strip(), path.strip()
            if not _SET_NAME.match(name) or not path:
                raise WhisperFtError(
                    f"--test_data {spec!r} does not parse: give NAME=MANIFEST.jsonl (NAME of letters, digits, "
                    "'_', '-', '.') or just a manifest path"
                )
        else:
            path, name = spec, Path(spec).stem
            if not spec:
                raise WhisperFtError("--test_data is empty: give NAME=MANIFEST.jsonl or a manifest path")
        out.append((name, Path(path)))
    seen: dict[str, Path] = {}
    for name, path in out:
        if name in seen:
            raise WhisperFtError(f"two test sets are named {name!r} ({seen[name]} and {path}): "
                                 "name them, e.g. --test_data zh_general=zh.jsonl")
        seen[name] = path
    return out


def load_test_sets(specs: list[tuple[str, Path]]) -> list[TestSet]:
    """Read every manifest; an unreadable or empty one, or one with missing audio, is an error."""
    sets = []
    for name, path in specs:
        try:
            utterances = read_manifest(path)
        except DataError as exc:
            raise DataError(f"test set {name!r}: {exc}") from exc
        if not utterances:
            raise DataError(f"test set {name!r} ({path}) is empty: give a manifest with at least one utterance")
        missing = [u for u in utterances if not u.audio_file.is_file()]
        if missing:
            raise DataError(f"test set {name!r} ({path}): {len(missing)} of {len(utterances)} audio files are "
                            f"missing (first: {missing[0].audio_file}); fix the paths or re-run `whisper-ft prepare`")
        sets.append(TestSet(name, path, tuple(utterances)))
    return sets


COMPUTE_TYPES = ("default", "float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16",
                 "int8_bfloat16", "int16")


@dataclass(frozen=True)
class ModelSpec:
    """One ``--models`` entry: ``[LABEL=]MODEL[@COMPUTE_TYPE]``."""

    name: str  # what whisper-ft resolves (a folder, a hub id, ``base``)
    label: str  # shown in the table, report.md and the chart: LABEL, else the folder's name
    compute_type: str | None = None  # CTranslate2 only; None: the model's stored precision


def parse_model_spec(entry: str) -> ModelSpec:
    """``ft=models/x-ct2@int8`` -> ModelSpec("models/x-ct2", "ft", "int8"); ``models/x`` -> label ``x``."""
    text = entry.strip()
    label = None
    if "=" in text:
        label, _, text = text.partition("=")
        label = label.strip()
    compute = None
    if "@" in text:
        text, _, compute = text.rpartition("@")
        compute = compute.strip().lower()
        if compute not in COMPUTE_TYPES:
            raise WhisperFtError(f"--models {entry!r}: unknown compute type {compute!r} after '@'; choose one of: "
                                 f"{', '.join(COMPUTE_TYPES)}")
    name = text.strip()
    if not name or label == "":
        raise WhisperFtError(f"--models {entry!r} does not parse: give MODEL, LABEL=MODEL or LABEL=MODEL@COMPUTE_TYPE")
    return ModelSpec(name, label or Path(name.rstrip("/\\")).name or name, compute)


def check_models(names: list[str]) -> None:
    """Resolve every model (and an adapter's base) without loading it."""
    from whisper_ft.models.loading import adapter_base
    from whisper_ft.models.registry import resolve_model

    for name in names:
        source = resolve_model(name)
        if source.kind == "adapter":
            adapter_base(Path(source.path))

"""Where a command may write a model folder: one policy for convert, merge and `models import`.

:func:`check_output_dir` runs before any heavy work. The target must not exist or be an empty
folder. With ``force`` it may also be a folder whisper-ft itself wrote as an export: one holding
the marker :data:`EXPORT_MARKER` (written last by every model-folder writer, with the list of the
files it wrote) or, for exports of earlier versions, one of their provenance files. ``force``
never replaces an adapter, a training run, a user's file or link, a folder of other things (or an
export the user added files to), the source model or a folder holding it, nor the working folder
or a folder holding it.

:func:`umask_modes` makes staged folders (``mkdtemp`` creates them 0700) follow the user's umask
like every other file whisper-ft writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError

EXPORT_MARKER = "whisper_ft_export.json"
# Provenance files of exports made before the marker existed (merge, convert, `models import`).
LEGACY_PROVENANCE = ("whisper_ft_merge.json", "whisper_ft_conversion.json", "whisper_ft_import.json")
RUN_FILES = ("trainer_state.json", "finetune_config.json", "speech_llm_config.json")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_modes(root: str | Path) -> None:
    """Give ``root`` and everything under it the modes a plain mkdir/open would (0o777/0o666 & ~umask)."""
    mask = current_umask()
    root = Path(root)
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_export_marker(folder: str | Path, kind: str) -> None:
    """Mark ``folder`` as an export whisper-ft wrote (call it last, once every file is there)."""
    folder = Path(folder)
    write_json(folder / EXPORT_MARKER, {"tool": "whisper-ft", "kind": kind, "files": _tree_entries(folder)})


def _tree_entries(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (links to folders included, not followed), relative."""
    found = []
    for parent, dirs, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(parent, d), folder) for d in dirs if os.path.islink(os.path.join(parent, d))]
        found += [os.path.relpath(os.path.join(parent, f), folder) for f in files]
    return sorted(found)


def _marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "whisper-ft" else None


def is_run_folder(folder: Path) -> bool:
    """A training run, or a part of one (checkpoint-N/, best/)."""
    return (any(p.is_dir() for p in folder.glob("checkpoint-*")) or (folder / "best").is_dir()
            or any((folder / name).is_file() for name in RUN_FILES))


def _foreign_entries(folder: Path) -> list[str]:
    """What in an export folder whisper-ft did not write (empty: the folder may be replaced)."""
    marker = _marker(folder)
    entries = _tree_entries(folder)
    if marker is not None and isinstance(marker.get("files"), list):
        written = set(marker["files"]) | {EXPORT_MARKER}
        return [e for e in entries if e not in written or os.path.islink(folder / e)]
    # an export of an earlier version: flat, plain files only
    return [e for e in entries if os.sep in e or os.path.islink(folder / e)]


def is_export_folder(folder: Path) -> bool:
    return _marker(folder) is not None or any((folder / name).is_file() for name in LEGACY_PROVENANCE)


def _is_within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def check_output_dir(output_dir: str | Path, *, force: bool = False, sources: Iterable[tuple[str | Path, str]] = (),
                     option: str = "--output_dir") -> Path:
    """Refuse a model output folder before any work is done; returns it as a Path.

    ``sources``: (path, what) pairs the output must not be or hold (the source model, the adapter
    being merged); ``option``: how the message names the folder."""
    if str(output_dir).strip() == "":
        raise WhisperFtError(f"{option} is empty: name the folder to write")
    out = Path(output_dir).expanduser()
    for path, what in sources:
        if path is not None and Path(path).exists() and _is_within(Path(path), out):
            raise WhisperFtError(f"{option} {out} is (or holds) {what} {path}: choose another folder")
    if _is_within(Path.cwd(), out):
        raise WhisperFtError(f"{option} {out} is the working folder (or holds it): choose a new folder for the model")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise WhisperFtError(f"{option} {out} is an existing file (or link), which whisper-ft never replaces (not even "
                             "with --force): choose a new folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not force:
            raise WhisperFtError(f"{out} already exists and is not empty: pass --force to replace it (only a model "
                                 "whisper-ft wrote), or choose another folder")
        if entries:
            _check_replaceable(out, entries, option)
    ancestor = out.parent  # the folder the staging folder and the new parents go in
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WhisperFtError(f"cannot create {option} {out}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise WhisperFtError(f"cannot write {option} {out}: {ancestor} is not writable")
    return out


def _check_replaceable(out: Path, entries: list[str], option: str) -> None:
    """``--force``: only an export whisper-ft wrote, holding nothing else, is replaced."""
    if (out / "adapter_config.json").is_file():
        raise WhisperFtError(f"{option} {out} is a LoRA adapter folder: --force never replaces an adapter; "
                             "choose a new folder")
    if is_run_folder(out):
        raise WhisperFtError(f"{option} {out} is a training run folder (checkpoints, best/): --force never replaces "
                             "a run; choose a new folder")
    if not is_export_folder(out):
        raise WhisperFtError(f"{option} {out} is not a model folder whisper-ft wrote (it holds {_shown(entries)}): "
                             f"--force replaces only those; choose a new folder, e.g. {out / 'my-model'}")
    foreign = _foreign_entries(out)
    if foreign:
        raise WhisperFtError(f"{option} {out} holds files whisper-ft did not write ({_shown(foreign)}): move them "
                             "out first, or choose a new folder")

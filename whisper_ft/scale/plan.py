"""What to transcribe, cut into shards.

Inputs are audio files, folders (searched recursively for audio, as ``infer-ct2`` does), glob
patterns (``'data/**/*.flac'``, quoted so the shell leaves them alone), whisper-ft manifests
(``.jsonl``: each record's audio, slice and language) and lists of paths (``.txt``/``.lst``, one per
line, relative to the list's folder). Every input becomes :class:`Item` s with a unique key (a
manifest record's id, else the path below the folder given, else the file's stem; a repeated key
gets ``-2``, ``-3``...).

A shard holds at most ``shard_files`` items and about ``shard_minutes`` of audio (durations from
the manifest, else the file's header; a file whose header does not tell counts as one file only).
The shard is the unit of work, of retry and of resume; :func:`fingerprint` identifies a plan so a
rerun into the same output folder only resumes the same work.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError

MANIFEST_SUFFIXES = (".jsonl", ".json")
LIST_SUFFIXES = (".txt", ".lst", ".list")
GLOB_CHARS = "*?["


@dataclass(slots=True)
class Item:
    """One audio file (or a slice of one) to transcribe."""

    key: str
    path: str  # absolute
    start: float | None = None
    end: float | None = None
    language: str | None = None
    duration: float | None = None  # seconds, when known before decoding

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        return cls(**d)


@dataclass
class Missing:
    """An input that names no audio (a missing path, a folder without audio)."""

    path: str
    message: str


def _manifest_items(path: Path) -> list[Item]:
    from whisper_ft.core.manifest import read_manifest

    items = []
    for utt in read_manifest(path):
        duration = utt.duration or None
        items.append(Item(utt.key, str(utt.audio_file.resolve()), utt.start_time, utt.end_time, utt.language,
                          duration))
    return items


def _list_items(path: Path) -> tuple[list[Item], list[Missing]]:
    items, missing = [], []
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        p = p if p.is_absolute() else path.parent / p
        if p.is_file():
            items.append(Item(p.stem, str(p.resolve())))
        else:
            missing.append(Missing(str(p), f"audio file not found (listed in {path})"))
    return items, missing


def _folder_items(folder: Path) -> list[Item]:
    from whisper_ft.workflows.inference import collect_audio_files

    files, _ = collect_audio_files([folder])
    return [Item(f.relative_to(folder).with_suffix("").as_posix(), str(f.resolve())) for f in files]


def collect_items(inputs: list[str | Path]) -> tuple[list[Item], list[Missing]]:
    """Every input's items, in the order given (folders and globs sorted), and the inputs that
    name nothing; keys made unique."""
    items: list[Item] = []
    missing: list[Missing] = []
    for raw in inputs:
        text = str(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            found = _folder_items(p)
            if not found:
                missing.append(Missing(str(p), "no audio files in this folder"))
            items += found
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            items += _manifest_items(p)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            found, gone = _list_items(p)
            items += found
            missing += gone
        elif p.is_file():
            items.append(Item(p.stem, str(p.resolve())))
        elif any(c in text for c in GLOB_CHARS):
            from whisper_ft.core.audio import AUDIO_EXTENSIONS

            matched = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            files = [m for m in matched if m.is_file() and m.suffix.lower() in AUDIO_EXTENSIONS]
            if not files:
                missing.append(Missing(text, "the pattern matches no audio file"))
            items += [Item(f.stem, str(f.resolve())) for f in files]
        else:
            missing.append(Missing(text, "not found (give audio files, folders, globs, manifests or lists)"))
    _unique_keys(items)
    return items, missing


def _unique_keys(items: list[Item]) -> None:
    seen: dict[str, int] = {}
    taken = {it.key for it in items}
    for it in items:
        n = seen.get(it.key, 0)
        seen[it.key] = n + 1
        if n:
            key = f"{it.key}-{n + 1}"
            while key in taken:
                n += 1
                key = f"{it.key}-{n + 1}"
            taken.add(key)
            it.key = key


def fill_durations(items: list[Item]) -> None:
    """Durations from the audio headers where the inputs did not give them (no decoding)."""
    from whisper_ft.core.audio import probe_audio
    from whisper_ft.core.errors import DataError

    for it in items:
        if it.duration is None:
            try:
                info = probe_audio(it.path)
            except (DataError, OSError):  # the worker reports it, with the same error
                info = None
            if info is not None:
                it.duration = info.duration


def make_shards(items: list[Item], *, shard_files: int, shard_minutes: float) -> list[list[Item]]:
    """Consecutive items in shards of at most ``shard_files`` files and about ``shard_minutes``."""
    if shard_files < 1 or shard_minutes <= 0:
        raise WhisperFtError("--shard_files must be at least 1 and --shard_minutes above 0")
    limit = shard_minutes * 60
    shards: list[list[Item]] = []
    current: list[Item] = []
    seconds = 0.0
    for it in items:
        d = it.duration or 0.0
        if current and (len(current) >= shard_files or seconds + d > limit):
            shards.append(current)
            current, seconds = [], 0.0
        current.append(it)
        seconds += d
    if current:
        shards.append(current)
    return shards


def fingerprint(shards: list[list[Item]]) -> str:
    """A digest of the plan: which files (and slices) go in which shard."""
    h = hashlib.sha256()
    for i, shard in enumerate(shards):
        for it in shard:
            h.update(json.dumps([i, it.key, it.path, it.start, it.end, it.language]).encode())
    return h.hexdigest()[:16]

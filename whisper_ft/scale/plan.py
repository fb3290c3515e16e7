"""What to transcribe: inputs -> items (each with its identity) -> shards.

Inputs are audio files, folders (searched recursively for audio, as ``infer-ct2`` does), glob
patterns (``'data/**/*.flac'``, quoted so the shell leaves them alone), whisper-ft manifests
(``.jsonl``/``.json``: each record's audio, slice and language; the text is ignored) and lists of
paths (``.txt``/``.lst``/``.list``, one per line, relative to the list's folder). Every input
becomes :class:`Item` s; the same file (or slice) named twice is one item.

An item's **identity** is where it is (absolute path, slice) and which version of it (size and
modification time, or with ``verify`` its content's SHA-256): an item already recorded in the
output folder under the same identity is not decoded again.

**Shards** are consecutive items (in input order) of at most ``shard_files`` files and about
``shard_minutes`` of audio (durations from manifests or file headers: nothing is decoded to plan).
The plan is made over *every* input, recorded or not, and only then are recorded items left out:
an interrupted run resumed on the same inputs decodes its remaining shards exactly as the
uninterrupted run would have (same neighbours in the same packed batches, so the same text).
"""

from __future__ import annotations

import glob
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError

MANIFEST_SUFFIXES = (".jsonl", ".json")
LIST_SUFFIXES = (".txt", ".lst", ".list")
GLOB_CHARS = "*?["
IO_THREADS = 8  # stat, header probes and hashes wait on the disk (or a network filesystem), not the CPU

Where = tuple[str, float | None, float | None]  # (absolute path, start, end): one input's place


@dataclass(slots=True)
class Item:
    """One audio file (or a slice of one) to transcribe."""

    key: str  # a name for its subtitle files and training ids (a manifest id, else the path below the folder)
    path: str  # absolute (symbolic links kept: the path as the user names it)
    start: float | None = None
    end: float | None = None
    language: str | None = None  # the input's own (a manifest record's)
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    planned: float | None = None  # seconds, from the manifest or the header (None: unknown)

    @property
    def where(self) -> Where:
        return (self.path, self.start, self.end)

    def identity(self) -> dict:
        """The ``audio`` fields a record of this item carries (and errors.jsonl lines)."""
        d: dict = {"path": self.path}
        if self.start is not None:
            d["start_time"] = self.start
        if self.end is not None:
            d["end_time"] = self.end
        if self.size is not None:
            d["size"] = self.size
            d["mtime_ns"] = self.mtime_ns
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        return d

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        return cls(**d)


@dataclass
class Missing:
    """An input that names no audio (a missing path, a folder without audio)."""

    path: str
    message: str
    reason: str = "missing"


def where_of(audio: dict) -> Where:
    """The place a record's (or an errors.jsonl line's) ``audio`` fields name."""
    return (audio["path"], audio.get("start_time"), audio.get("end_time"))


def same_version(recorded: dict, item: Item) -> bool:
    """Whether a record's ``audio`` fields are this item's version: the same content hash when
    both have one, else the same size and modification time."""
    if item.sha256 is not None and recorded.get("sha256") is not None:
        return recorded["sha256"] == item.sha256
    return recorded.get("size") == item.size and recorded.get("mtime_ns") == item.mtime_ns


def _absolute(path: Path) -> str:
    """The path made absolute and normal (``a/../b`` -> ``b``), its symbolic links kept."""
    return os.path.abspath(path)


def _manifest_items(path: Path) -> list[Item]:
    from whisper_ft.core.manifest import read_manifest

    return [Item(utt.key, _absolute(utt.audio_file), utt.start_time, utt.end_time, utt.language,
                 planned=utt.duration or None) for utt in read_manifest(path)]


def _list_items(path: Path) -> tuple[list[Item], list[Missing]]:
    items, missing = [], []
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        p = p if p.is_absolute() else path.parent / p
        if p.is_file():
            items.append(Item(p.stem, _absolute(p)))
        else:
            missing.append(Missing(str(p), f"audio file not found (listed in {path})"))
    return items, missing


def _folder_items(folder: Path) -> list[Item]:
    from whisper_ft.core.audio import AUDIO_EXTENSIONS

    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
    return [Item(f.relative_to(folder).with_suffix("").as_posix(), _absolute(f)) for f in files]


def collect_items(inputs: list[str | Path]) -> tuple[list[Item], list[Missing]]:
    """Every input's items in the order given (folders and globs sorted), the same place once, and
    the inputs that name nothing."""
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
            items.append(Item(p.stem, _absolute(p)))
        elif any(c in text for c in GLOB_CHARS):
            from whisper_ft.core.audio import AUDIO_EXTENSIONS

            matched = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            files = [m for m in matched if m.is_file() and m.suffix.lower() in AUDIO_EXTENSIONS]
            if not files:
                missing.append(Missing(text, "the pattern matches no audio file"))
            items += [Item(f.stem, _absolute(f)) for f in files]
        else:
            missing.append(Missing(text, "not found (give audio files, folders, globs, manifests or lists)"))
    unique: dict[Where, Item] = {}
    for it in items:
        unique.setdefault(it.where, it)
    return list(unique.values()), missing


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identify(items: list[Item], *, verify: bool) -> list[Missing]:
    """Fill in each item's size and modification time (and with ``verify`` its SHA-256); returns
    the items whose file went missing meanwhile (and drops them from ``items``)."""
    def one(it: Item) -> Missing | None:
        try:
            st = os.stat(it.path)
            it.size, it.mtime_ns = st.st_size, st.st_mtime_ns
            if verify:
                it.sha256 = _sha256(it.path)
        except OSError as exc:
            return Missing(it.path, f"cannot read it: {exc.strerror or exc}")
        return None

    with ThreadPoolExecutor(IO_THREADS) as pool:
        gone = [m for m in pool.map(one, items) if m is not None]
    if gone:
        lost = {m.path for m in gone}
        items[:] = [it for it in items if it.path not in lost]
    return gone


def fill_planned(items: list[Item]) -> None:
    """Durations from the audio headers where nothing told them (no decoding); a file whose header
    does not tell stays None (its worker reports any problem with it)."""
    from whisper_ft.core.audio import probe_audio

    def one(it: Item) -> None:
        try:
            info = probe_audio(it.path)
        except Exception:  # an unreadable header: the worker says why
            info = None
        if info is not None:
            end = info.duration if it.end is None else min(it.end, info.duration)
            it.planned = max(0.0, end - (it.start or 0.0))

    todo = [it for it in items if it.planned is None]
    with ThreadPoolExecutor(IO_THREADS) as pool:
        list(pool.map(one, todo))


def make_shards(items: list[Item], *, shard_files: int, shard_minutes: float) -> list[list[Item]]:
    """Consecutive items in shards of at most ``shard_files`` files and about ``shard_minutes``."""
    if shard_files < 1 or shard_minutes <= 0:
        raise WhisperFtError("--shard_files must be at least 1 and --shard_minutes above 0")
    limit = shard_minutes * 60
    shards: list[list[Item]] = []
    current: list[Item] = []
    seconds = 0.0
    for it in items:
        d = it.planned or 0.0
        if current and (len(current) >= shard_files or seconds + d > limit):
            shards.append(current)
            current, seconds = [], 0.0
        current.append(it)
        seconds += d
    if current:
        shards.append(current)
    return shards

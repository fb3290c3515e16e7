"""The output folder of ``whisper-ft transcribe``::

    OUT/whisper_ft_transcribe.json   what this folder is: the model and decoding options of its records
    OUT/part-00000.jsonl             records (one per input file), a new part per finished shard
    OUT/errors.jsonl                 inputs without a record: file, reason (missing, empty, unreadable,
                                     too_long, decode_failed) and the message of their latest attempt
    OUT/summary.json                 at the end of a run: files, hours, throughput, failures, filters
    OUT/<format>/<key>.<format>      with --format: each file's transcript (srt, vtt, txt, json, tsv)
    OUT/.index/part-00000.json       what each part holds (inputs, planned and decoded seconds), so a
                                     rerun does not parse every record; rebuilt from the part if lost

Every file is written atomically (a hidden temp file, then a rename), and a part is never
rewritten: the rename of a part is the moment its inputs count as recorded. Subtitles are written
before their part, the index and errors.jsonl after it, so a crash at any point leaves records
that are complete and inputs without a record that the next run decodes. One run at a time
writes a folder (an advisory lock on ``OUT/.lock``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.scale.plan import Where, where_of

MARKER = "whisper_ft_transcribe.json"
FORMAT = 2  # 1: the first layout (manifests/, done/, train.jsonl), not readable by this one
ERRORS = "errors.jsonl"
SUMMARY = "summary.json"
INDEX = ".index"


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a hidden temp file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _safe_relative(key: str) -> str:
    """A key as a relative path that stays inside its folder (no '..', no absolute path)."""
    return "/".join(p if p not in ("", ".", "..") else "_" for p in key.replace("\\", "/").split("/"))


@dataclass
class Recorded:
    """One input's latest record, as the index tells it."""

    audio: dict  # the record's identity fields
    part: int
    duration: float
    planned: float | None = None


class OutputFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.recorded: dict[Where, Recorded] = {}
        self.errors: dict[Where, dict] = {}
        self.next_part = 0
        self._lock = None

    # --- opening ---------------------------------------------------------------------------------

    def open(self, defining: dict) -> None:
        """Create the folder, or check that it holds records of the same model and decoding
        options; take the lock; read what is recorded and what failed."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise WhisperFtError(f"--output_dir {root} is a file: give a folder")
        marker = root / MARKER
        try:
            fresh = not (root.is_dir() and any(root.iterdir()))
        except OSError as exc:
            raise WhisperFtError(f"cannot read --output_dir {root}: {exc.strerror or exc}") from exc
        if not fresh:
            _check_marker(marker, defining, root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            if fresh:
                write_text(marker, json.dumps({"tool": "whisper-ft transcribe", "format": FORMAT, **defining},
                                              indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise WhisperFtError(f"cannot write to --output_dir {root}: {exc.strerror or exc}; "
                                 "give a writable folder") from exc
        for tmp in [*root.glob(".*.tmp"), *(root / INDEX).glob(".*.tmp")]:  # a run killed mid-write
            tmp.unlink(missing_ok=True)
        self._scan()
        self._read_errors()

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise WhisperFtError(f"another `whisper-ft transcribe` is writing to {self.root}: wait for it to end, "
                                 "or give another --output_dir") from None
        self._lock = fd

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def parts(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.root.glob("part-*.jsonl"):
            try:
                found.append((int(p.stem.removeprefix("part-")), p))
            except ValueError:
                continue
        return sorted(found)

    def part_path(self, number: int) -> Path:
        return self.root / f"part-{number:05d}.jsonl"

    def _index_path(self, number: int) -> Path:
        return self.root / INDEX / f"part-{number:05d}.json"

    def _scan(self) -> None:
        for number, path in self.parts():
            for row in self._index(number, path):
                self.recorded[where_of(row["audio"])] = Recorded(row["audio"], number, row["duration"],
                                                                 row.get("planned"))
            self.next_part = number + 1

    def _index(self, number: int, path: Path) -> list[dict]:
        """The part's index, rebuilt from the part when missing or not this part's."""
        st = path.stat()
        try:
            index = json.loads(self._index_path(number).read_text(encoding="utf-8"))
            if index["size"] == st.st_size and index["mtime_ns"] == st.st_mtime_ns:
                return index["inputs"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        rows = [{"audio": r["audio"], "duration": r["duration"]} for r in read_records(path)]
        self._write_index(number, path, rows)
        return rows

    def _write_index(self, number: int, path: Path, rows: list[dict]) -> None:
        st = path.stat()
        write_text(self._index_path(number), json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                         "inputs": rows}, ensure_ascii=False) + "\n")

    def _read_errors(self) -> None:
        path = self.root / ERRORS
        if path.is_file():
            for row in read_records(path):
                where = where_of(row["audio"])
                if where not in self.recorded:
                    self.errors[where] = row

    # --- writing ---------------------------------------------------------------------------------

    def commit(self, records: list[dict], errors: list[dict], planned: dict[Where, float | None]) -> int | None:
        """Write one finished shard: subtitles, then its part (the commit), its index, errors.jsonl.
        Returns the part's number (None when the shard recorded nothing)."""
        number = None
        if records:
            for record in records:
                for fmt, text in (record.pop("_outputs", None) or {}).items():
                    write_text(self.root / fmt / f"{_safe_relative(record['id'])}.{fmt}", text)
            number = self.next_part
            path = self.part_path(number)
            if path.exists():  # never overwrite a part (another writer without the lock?)
                raise WhisperFtError(f"{path} appeared during the run: is another program writing to {self.root}?")
            write_text(path, jsonl(records))
            self.next_part += 1
            rows = []
            for r in records:
                where = where_of(r["audio"])
                rows.append({"audio": r["audio"], "duration": r["duration"], "planned": planned.get(where)})
                self.recorded[where] = Recorded(r["audio"], number, r["duration"], planned.get(where))
                self.errors.pop(where, None)
            self._write_index(number, path, rows)
        for e in errors:
            self.errors[where_of(e["audio"])] = e
        if errors or records:
            self.write_errors()
        return number

    def add_errors(self, errors: list[dict]) -> None:
        for e in errors:
            self.errors[where_of(e["audio"])] = e

    def write_errors(self) -> None:
        path = self.root / ERRORS
        if self.errors or path.exists():
            rows = sorted(self.errors.values(), key=lambda e: (e["audio"]["path"], e["audio"].get("start_time") or 0))
            write_text(path, jsonl(rows))

    def write_summary(self, summary: dict) -> Path:
        path = self.root / SUMMARY
        write_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return path

    # --- reading ---------------------------------------------------------------------------------

    def latest_records(self):
        """Every input's latest record (a file decoded again after it changed: its newest), part by part."""
        latest = {(r.part, where) for where, r in self.recorded.items()}
        for number, path in self.parts():
            for record in read_records(path):
                if (number, where_of(record["audio"])) in latest:
                    yield record


def read_records(path: Path) -> list[dict]:
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as exc:
                    raise WhisperFtError(f"{path}:{lineno} is not a JSON record ({exc}): was it edited? "
                                         "Move it away and run again to decode its inputs anew") from exc
    return out


def _check_marker(marker: Path, defining: dict, root: Path) -> None:
    if not marker.is_file():
        raise WhisperFtError(f"--output_dir {root} holds files `whisper-ft transcribe` did not write: "
                             "give a new or empty folder")
    try:
        before = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WhisperFtError(f"{marker} is unreadable ({exc}): give a new --output_dir") from exc
    if before.get("tool") != "whisper-ft transcribe":
        raise WhisperFtError(f"--output_dir {root} was not written by `whisper-ft transcribe`: give a new folder")
    if before.get("format") != FORMAT:
        raise WhisperFtError(f"--output_dir {root} was written by an older `whisper-ft transcribe` (manifests/, "
                             "done/): give a new folder")
    changed = []
    for group in ("model", "decoding", "agreement_model"):
        old, new = before.get(group) or {}, defining.get(group) or {}
        changed += [f"{group}.{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                    if k != "name" and old.get(k) != new.get(k)]
    if changed:
        raise WhisperFtError(f"--output_dir {root} holds records decoded otherwise ({'; '.join(changed[:3])}): "
                             "run with the same model and decoding options, or give a new folder")

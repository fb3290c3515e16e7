"""Other projects' JSON manifests -> ours.

Accepted inputs (detected per file / per record):

* SLAM-ASR JSON Lines: ``{"key": ID, "source": AUDIO_PATH, "target": TRANSCRIPT}``
* Whisper-Finetune records, as JSON Lines or as one JSON array:
  ``{"audio": {"path", "start_time"?, "end_time"?}, "sentence", "sentences"?, "language"?, "duration"?}``

Relative audio paths are tried against the input file's folder, then the current folder. Durations
are always re-read from the audio (an input's ``duration`` may be stale or missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from whisper_ft.core.errors import DataError
from whisper_ft.core.manifest import Utterance
from whisper_ft.data.common import (
    Candidate,
    PrepareOptions,
    PrepareReport,
    SkipReason,
    normalize_text,
    read_text,
    resolve_path,
    select,
    write_splits,
)


def iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the exception) for a JSON array file or a JSON Lines file."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON array ({exc.msg}); fix the file or convert it "
                            "to JSON Lines") from exc
        for i, record in enumerate(records, 1):
            yield i, record  # an array has no line numbers: number the records instead
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, exc


def to_candidate(record: Any, bases: tuple[Path, ...], split: str) -> Candidate:
    """One SLAM-ASR or Whisper-Finetune record -> a candidate; ValueError says what is wrong."""
    if isinstance(record, Exception):
        raise ValueError(f"invalid JSON: {record}")
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    if "source" in record and "target" in record and "audio" not in record:
        source, target = record["source"], record["target"]
        if not isinstance(source, str) or not source or not isinstance(target, str):
            raise ValueError('SLAM-ASR records need "source" (audio path) and "target" (transcript) strings')
        key = record.get("key")
        extra = {k: v for k, v in record.items() if k not in {"key", "source", "target"}}
        return Candidate(resolve_path(source, *bases), normalize_text(target), split,
                         id=None if key is None else str(key), extra=extra)
    record = dict(record)
    record["duration"] = 0.0  # not trusted anyway: probing measures it
    utt = Utterance.from_dict(record)
    return Candidate(resolve_path(utt.audio_path, *bases), normalize_text(utt.sentence), split, id=utt.id,
                     start=utt.start_time, end=utt.end_time, language=utt.language, sentences=utt.sentences,
                     extra=utt.extra)


def prepare_jsonl(input: str | Path, output: str | Path | None = None,
                  options: PrepareOptions | None = None) -> PrepareReport:
    """Convert ``input`` (SLAM-ASR JSONL or Whisper-Finetune JSON/JSONL) into our manifest ``output``
    (default ``dataset/<input name>.jsonl``)."""
    options = options or PrepareOptions()
    path = Path(input)
    if not path.is_file():
        raise DataError(f"input file not found: {path} (pass --input with a JSON Lines or JSON list file)")
    output = Path(output) if output is not None else Path("dataset") / f"{path.stem}.jsonl"
    report = PrepareReport(source="jsonl", output=output)
    split = output.stem
    bases = (path.parent, Path.cwd())
    candidates = []
    for lineno, record in iter_records(path):
        try:
            candidates.append(to_candidate(record, bases, split))
        except ValueError as exc:
            report.skip(SkipReason.INVALID_RECORD, f"{path}:{lineno}", str(exc))
    by_split = select(candidates, options, report)
    by_split.setdefault(split, [])
    return write_splits(by_split, {split: output}, report)

"""What every source shares: options, candidate utterances, parallel probing, skips, the report.

A source turns its input into :class:`Candidate` objects (audio path + transcript + split); then
:func:`finalize` probes the audio in parallel, drops what is unusable (counting each reason with
the file name), applies the duration filter and writes one manifest per split atomically.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from whisper_ft.core.errors import DataError, WhisperFtError
from whisper_ft.core.manifest import TimedSentence, Utterance, write_manifest

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MIN_DURATION = 0.5  # seconds; shorter clips are mostly clicks or cut words
DEFAULT_MAX_DURATION = 30.0  # seconds; Whisper sees at most one 30 s window


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class SkipReason(str, Enum):
    """Why an utterance did not make it into a manifest."""

    NO_TRANSCRIPT = "no_transcript"
    MISSING_AUDIO = "missing_audio"
    UNREADABLE_AUDIO = "unreadable_audio"
    EMPTY_AUDIO = "empty_audio"
    EMPTY_TEXT = "empty_text"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    INVALID_RECORD = "invalid_record"
    DUPLICATE_ID = "duplicate_id"
    BAD_SLICE = "bad_slice"
    BAD_ARCHIVE = "bad_archive"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    SkipReason.NO_TRANSCRIPT: "audio without transcript",
    SkipReason.MISSING_AUDIO: "transcript without audio file",
    SkipReason.UNREADABLE_AUDIO: "unreadable or corrupt audio",
    SkipReason.EMPTY_AUDIO: "empty audio (no samples)",
    SkipReason.EMPTY_TEXT: "empty transcript",
    SkipReason.TOO_SHORT: "shorter than --min_duration",
    SkipReason.TOO_LONG: "longer than --max_duration",
    SkipReason.INVALID_RECORD: "invalid input record",
    SkipReason.DUPLICATE_ID: "duplicate utterance id",
    SkipReason.BAD_SLICE: "start/end times outside the audio",
    SkipReason.BAD_ARCHIVE: "unreadable archive",
}


@dataclass
class PrepareOptions:
    """Options common to every source (`--min_duration`, `--max_duration`, `--num_workers`, `--language`)."""

    min_duration: float = DEFAULT_MIN_DURATION
    max_duration: float = DEFAULT_MAX_DURATION
    num_workers: int = field(default_factory=default_workers)
    language: str | None = None

    def __post_init__(self) -> None:
        if self.min_duration < 0 or self.max_duration <= 0 or self.min_duration > self.max_duration:
            raise WhisperFtError(
                f"bad duration range --min_duration {self.min_duration} --max_duration {self.max_duration}: "
                "use 0 <= min_duration <= max_duration (seconds)"
            )
        if self.num_workers < 1:
            raise WhisperFtError(f"--num_workers must be at least 1 (got {self.num_workers})")
        if self.language:  # "Chinese" -> "zh"; an unknown code fails here, not in finetune
            from whisper_ft.core.languages import normalize_language

            self.language = normalize_language(self.language)


@dataclass
class Candidate:
    """An utterance a source proposes; probing decides whether it becomes a manifest record."""

    audio: Path
    text: str
    split: str = "train"
    id: str | None = None
    start: float | None = None  # seconds into the file (segments)
    end: float | None = None
    language: str | None = None
    sentences: list[TimedSentence] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    duration: float | None = None  # already known (e.g. we just wrote the wav); else probed

    @property
    def name(self) -> str:
        """How skips name this candidate: its file (and id when it differs from the file stem)."""
        if self.id and self.id != self.audio.stem:
            return f"{self.id} ({self.audio})"
        return str(self.audio)


@dataclass(frozen=True)
class Skipped:
    """One dropped item: why, which file/id, and the detail (e.g. the decoder's message)."""

    reason: SkipReason
    item: str
    detail: str = ""


class SkipError(Exception):
    """Raised inside probing/decoding workers to turn one item into a :class:`Skipped`."""

    def __init__(self, reason: SkipReason, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class SplitSummary:
    name: str
    utterances: int
    seconds: float
    manifest: Path | None = None

    @property
    def hours(self) -> float:
        return self.seconds / 3600


@dataclass
class PrepareReport:
    """What a `prepare` run produced and what it skipped (with file names)."""

    source: str
    output: Path
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    work: Counter = field(default_factory=Counter)  # e.g. archives extracted vs. reused

    def skip(self, reason: SkipReason, item: str, detail: str = "") -> None:
        self.skipped.append(Skipped(reason, item, detail))

    @property
    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(s.reason.value for s in self.skipped))

    def skipped_items(self, reason: SkipReason) -> list[str]:
        return [s.item for s in self.skipped if s.reason is reason]

    @property
    def utterances(self) -> int:
        return sum(s.utterances for s in self.splits.values())

    @property
    def hours(self) -> float:
        return sum(s.hours for s in self.splits.values())

    def summary(self, examples: int = 3) -> str:
        lines = [f"{self.source} -> {self.output}"]
        width = max([5] + [len(n) for n in self.splits])
        lines.append(f"  {'split':<{width}}  {'utterances':>10}  {'hours':>8}  manifest")
        for s in self.splits.values():
            lines.append(f"  {s.name:<{width}}  {s.utterances:>10}  {s.hours:>8.3f}  {s.manifest or '-'}")
        lines.append(f"  {'total':<{width}}  {self.utterances:>10}  {self.hours:>8.3f}")
        lines.append(f"skipped: {len(self.skipped)}")
        for reason in SkipReason:
            items = [s for s in self.skipped if s.reason is reason]
            if not items:
                continue
            lines.append(f"  {reason.value} ({reason.description}): {len(items)}")
            for s in items[:examples]:
                lines.append(f"    {s.item}" + (f": {s.detail}" if s.detail else ""))
            if len(items) > examples:
                lines.append(f"    ... and {len(items) - examples} more")
        for key, value in sorted(self.work.items()):
            lines.append(f"{key.replace('_', ' ')}: {value}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": str(self.output),
            "splits": {
                n: {"utterances": s.utterances, "hours": round(s.hours, 4),
                    "manifest": str(s.manifest) if s.manifest else None}
                for n, s in self.splits.items()
            },
            "skipped": self.skip_counts,
            "skipped_items": {r.value: self.skipped_items(r) for r in SkipReason if self.skipped_items(r)},
            "work": dict(self.work),
        }


# --- text --------------------------------------------------------------------------------------

_CJK = r"\u2e80-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")


def normalize_text(text: str) -> str:
    """Trim, collapse whitespace, and drop spaces between CJK characters (word-segmented Chinese
    transcripts such as AISHELL/Kaldi ``text`` files); spaces between Latin words stay."""
    text = unicodedata.normalize("NFC", " ".join(text.split()))
    return _SPACE_BETWEEN_CJK.sub("", text)


# --- parallel helpers --------------------------------------------------------------------------

def parallel_map(fn: Callable[[T], R], items: Iterable[T], num_workers: int, desc: str = "",
                 total: int | None = None, unit: str = "file", disable: bool = False) -> Iterator[R]:
    """``map`` in order over worker threads, with a progress bar on stderr.

    Threads, not processes: the heavy parts (libsndfile, zlib, soxr, file I/O) release the GIL,
    and threads need no pickling of arguments or start-up cost per worker. When the consumer stops
    early (Ctrl-C, an error, ``close()``), the queued items are dropped and running ones get about
    a second to finish: the threads are daemons, so a stuck decoder cannot hold the process.
    """
    from whisper_ft.core.console import progress

    items = list(items)
    total = len(items) if total is None else total
    if num_workers <= 1 or len(items) <= 1:
        yield from progress(map(fn, items), total=total, desc=desc, unit=unit, disable=disable)
        return
    pool = _WorkerPool(fn, items, num_workers)
    try:
        yield from progress(pool.results(), total=total, desc=desc, unit=unit, disable=disable)
    finally:
        pool.cancel()


class _WorkerPool:
    """Daemon threads working through a fixed list; results come back in input order.

    Not ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so after Ctrl-C the
    process waited for every running call (and, before ``cancel_futures``, every queued one).
    """

    def __init__(self, fn: Callable[[T], R], items: list[T], num_workers: int) -> None:
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        for entry in enumerate(items):
            self._todo.put(entry)
        self._count = len(items)
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(fn,), daemon=True, name=f"whisper-ft-{i}")
                         for i in range(min(num_workers, len(items)))]
        for thread in self._threads:
            thread.start()

    def _work(self, fn: Callable[[T], R]) -> None:
        while not self._stop.is_set():
            try:
                index, item = self._todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._done.put((index, True, fn(item)))
            except BaseException as exc:  # handed to the consumer, raised there
                self._done.put((index, False, exc))

    def results(self) -> Iterator[R]:
        ready: dict[int, tuple[bool, Any]] = {}
        for want in range(self._count):
            while want not in ready:
                try:  # a timeout keeps the wait interruptible by Ctrl-C on every platform
                    index, ok, value = self._done.get(timeout=0.2)
                except queue.Empty:
                    continue
                ready[index] = (ok, value)
            ok, value = ready.pop(want)
            if not ok:
                raise value
            yield value

    def cancel(self, grace: float = 1.0) -> None:
        """Drop the queued items; wait up to ``grace`` seconds in all for the running ones."""
        self._stop.set()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def probe(candidate: Candidate) -> float:
    """The candidate's duration in seconds; raises :class:`SkipError` when its audio is unusable."""
    from whisper_ft.core.audio import AudioEmptyError, AudioMissingError, audio_info, slice_problem

    if candidate.duration is not None:
        return candidate.duration
    try:
        total = audio_info(candidate.audio).duration
    except AudioMissingError as exc:
        raise SkipError(SkipReason.MISSING_AUDIO, "file not found") from exc
    except AudioEmptyError as exc:
        raise SkipError(SkipReason.EMPTY_AUDIO, "no samples") from exc
    except DataError as exc:
        # The item is already named in the report: keep only what the decoder said.
        raise SkipError(SkipReason.UNREADABLE_AUDIO, short_error(exc, drop=str(candidate.audio))) from exc
    problem = slice_problem(candidate.start, candidate.end, total)
    if problem:
        raise SkipError(SkipReason.BAD_SLICE, problem)
    start = candidate.start or 0.0
    end = total if candidate.end is None else min(candidate.end, total)
    return end - start


def short_error(exc: BaseException, drop: str | None = None) -> str:
    """The first line of an error message, capped; ``drop``: a file name to leave out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if drop:
        text = text.replace(f": '{drop}'", "").replace(f"'{drop}'", "").replace(f" {drop}", "").rstrip(" :")
    return text[:200]


def _probe_or_skip(candidate: Candidate) -> float | SkipError:
    try:
        return probe(candidate)
    except SkipError as exc:
        return exc
    except Exception as exc:  # never die half-way on one bad file
        return SkipError(SkipReason.UNREADABLE_AUDIO, short_error(exc))


def select(candidates: list[Candidate], options: PrepareOptions, report: PrepareReport,
           desc: str = "probing audio") -> dict[str, list[Utterance]]:
    """Probe every candidate (in parallel), record skips, and return utterances grouped by split."""
    by_split: dict[str, list[Utterance]] = {}
    seen: set[tuple[str, str]] = set()
    todo: list[Candidate] = []
    for c in candidates:
        if not c.text.strip():
            report.skip(SkipReason.EMPTY_TEXT, c.name)
            continue
        if c.language:
            from whisper_ft.core.languages import normalize_language

            try:
                c.language = normalize_language(c.language)
            except WhisperFtError as exc:
                report.skip(SkipReason.INVALID_RECORD, c.name, str(exc).split(";")[0])
                continue
        if c.id is not None:
            if (c.split, c.id) in seen:
                report.skip(SkipReason.DUPLICATE_ID, c.name, f"id {c.id!r} already used in {c.split}")
                continue
            seen.add((c.split, c.id))
        by_split.setdefault(c.split, [])
        todo.append(c)
    # closing(): on Ctrl-C or an error the workers stop now, not when the traceback is freed.
    with closing(parallel_map(_probe_or_skip, todo, options.num_workers, desc=desc)) as results:
        probed = list(zip(todo, results))
    for c, result in probed:
        if isinstance(result, SkipError):
            report.skip(result.reason, c.name, result.detail)
            continue
        duration = float(result)
        if duration < options.min_duration:
            report.skip(SkipReason.TOO_SHORT, c.name, f"{duration:.2f} s")
            continue
        if duration > options.max_duration:
            report.skip(SkipReason.TOO_LONG, c.name, f"{duration:.2f} s")
            continue
        # A segment running past the end of its audio is clipped: end_time matches the duration.
        end = None if c.end is None else (c.start or 0.0) + duration
        by_split[c.split].append(Utterance(
            audio_path=str(c.audio), sentence=c.text, duration=duration, start_time=c.start,
            end_time=end, sentences=c.sentences, language=c.language or options.language, id=c.id,
            extra=dict(c.extra),
        ))
    return by_split


def write_splits(by_split: dict[str, list[Utterance]], paths: dict[str, Path], report: PrepareReport,
                 require_any: bool = True) -> PrepareReport:
    """Write one manifest per split (atomically, paths relative to the manifest) and fill the report.

    Raises :class:`DataError` when nothing at all is usable, naming the most common skip reason.
    """
    total = sum(len(v) for v in by_split.values())
    if require_any and total == 0:
        raise DataError(f"no usable utterance for {report.output}: {_skip_hint(report)}")
    for split, utterances in by_split.items():
        path = paths[split]
        write_manifest(path, utterances)
        report.splits[split] = SplitSummary(split, len(utterances), sum(u.duration for u in utterances), path)
    return report


def _skip_hint(report: PrepareReport) -> str:
    if not report.skipped:
        return "the input lists no utterance (check the input files)"
    reason, count = Counter(s.reason for s in report.skipped).most_common(1)[0]
    first = next(s for s in report.skipped if s.reason is reason)
    detail = f" ({first.detail})" if first.detail else ""
    return (f"all {len(report.skipped)} skipped, most as {reason.value} ({reason.description}: {count}), "
            f"e.g. {first.item}{detail}")


def read_text(path: str | Path) -> str:
    """A UTF-8 text input (a byte-order mark is dropped); :class:`DataError` with the file and line
    of the first byte that is not UTF-8, instead of a bare ``UnicodeDecodeError``."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8 "
                        "(e.g. iconv -f GBK -t UTF-8)") from None


def resolve_path(path: str, *bases: Path) -> Path:
    """An audio path from an input file: absolute as is; relative tried against each base in turn."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in bases:
        if (base / p).exists():
            return base / p
    return (bases[0] / p) if bases else p


def log_skips(report: PrepareReport, limit: int = 10) -> None:
    """A warning line on stderr for the first few skips of each reason (the summary has the counts)."""
    from whisper_ft.core.console import warn

    shown: Counter = Counter()
    for s in report.skipped:
        shown[s.reason] += 1
        if shown[s.reason] <= limit:
            warn(f"skipped ({s.reason.value}) {s.item}" + (f": {s.detail}" if s.detail else ""))

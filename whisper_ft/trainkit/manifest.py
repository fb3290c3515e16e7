"""The data checks both recipes run on every manifest before any model is loaded.

:func:`check_manifest` reads one manifest, or several read as one set (:func:`manifest_paths`:
comma-separated or repeated paths, globs, folders of ``*.jsonl`` shards), and checks it completely:
parse errors, missing audio, unknown or missing languages, durations outside ``[min_duration,
max_duration]`` and unusable audio (undecodable, empty, a slice outside the file: probed from the
header, dropped, counted and named). Each recipe then tokenises the kept utterances its own way and
fills in ``kept`` / ``hours`` / ``languages`` of the :class:`ManifestReport`.
"""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.core.errors import DataError, WhisperFtError
from whisper_ft.core.manifest import Utterance, validate_manifest
from whisper_ft.trainkit.dist import is_main_process

GLOB_CHARS = set("*?[")


@dataclass
class ManifestReport:
    """What was read from one manifest (or one set of shards) and what was dropped (and why)."""

    name: str  # "train" / "test"
    path: Path | str  # the manifest, or "first.jsonl + N more" for several
    total: int
    too_short: int = 0
    too_long: int = 0
    too_many_tokens: int = 0
    bad_audio: list[tuple[str, str]] = field(default_factory=list)  # (file, why): undecodable, bad slice
    kept: int = 0
    hours: float = 0.0
    languages: Counter = field(default_factory=Counter)
    max_label_tokens: int | None = None  # the recipe's label limit, when it drops longer labels

    def summary(self) -> str:
        langs = ", ".join(f"{k} {v}" for k, v in self.languages.most_common(5))
        return (
            f"{self.name} data {self.path}: {self.kept} of {self.total} utterances kept ({self.hours:.2f} h; {langs}); "
            f"dropped {self.too_short} shorter / {self.too_long} longer than the duration limits"
            + (f", {self.too_many_tokens} with labels over {self.max_label_tokens} tokens"
               if self.max_label_tokens is not None else "")
            + (f", {len(self.bad_audio)} with unusable audio" if self.bad_audio else "")
        )

    def count_kept(self, samples: list) -> None:
        """Fill in what was kept from the recipe's samples (each has ``duration`` and ``language``)."""
        self.kept = len(samples)
        self.hours = sum(s.duration for s in samples) / 3600
        self.languages = Counter(s.language for s in samples)


def manifest_paths(spec: str | Path | list | tuple) -> list[Path]:
    """The manifests ``spec`` names, in order: a path, a folder (its ``*.jsonl`` shards, sorted), a
    glob (sorted matches), or several of these comma-separated or as a list. An existing file whose
    name holds a comma is taken as it is."""
    parts: list[str] = []
    for item in [spec] if isinstance(spec, (str, Path)) else list(spec):
        text = str(item).strip()
        parts += [text] if Path(text).is_file() else [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise WhisperFtError("no manifest given: name a JSON Lines file, a folder of *.jsonl shards or a glob")
    paths: list[Path] = []
    for part in parts:
        if Path(part).is_dir():
            shards = sorted(Path(part).glob("*.jsonl"))
            if not shards:
                raise DataError(f"{part} is a folder without *.jsonl manifests; give a manifest or a folder of shards")
            paths += shards
        elif GLOB_CHARS & set(part):
            matches = sorted(Path(m) for m in glob.glob(part) if Path(m).is_file())
            if not matches:
                raise DataError(f"no manifest matches {part}; check the pattern (quote it so the shell leaves it)")
            paths += matches
        else:
            paths.append(Path(part))
    return list(dict.fromkeys(paths))  # a shard named twice is read once


def check_manifest(
    path: str | Path | list, *, name: str, language: str | None, min_duration: float, max_duration: float,
    fallback_language: str | None = None,
) -> tuple[list[tuple[Utterance, str]], ManifestReport]:
    """Parse and check a manifest (or several, see :func:`manifest_paths`); returns the usable
    (utterance, language) pairs and a report.

    ``language`` overrides every record's; ``fallback_language`` only fills in records without one
    (general-speech sets keep their own languages).

    Raises :class:`DataError` for an unreadable, invalid or empty manifest, missing audio files,
    unknown or missing languages, or when no utterance is left after the duration limits.
    """
    from whisper_ft.core.languages import normalize_language

    paths = manifest_paths(path)
    checks = [validate_manifest(p) for p in paths]  # raises on a missing/invalid/empty manifest
    shown: Path | str = paths[0] if len(paths) == 1 else f"{paths[0]} + {len(paths) - 1} more"
    utterances = [u for c in checks for u in c.utterances]
    missing = [u for c in checks for u in c.missing_audio]
    report = ManifestReport(name, shown, total=len(utterances))
    if missing:
        raise DataError(
            f"{shown}: {len(missing)} of {len(utterances)} utterances have missing audio files "
            f"(first: {missing[0].audio_file}); fix the paths or re-run `whisper-ft prepare`"
        )
    kept: list[tuple[Utterance, str]] = []
    no_language = 0
    for utt in utterances:
        try:
            lang = language or normalize_language(utt.language) or fallback_language
        except WhisperFtError as exc:
            raise DataError(f"{shown}: utterance {utt.key}: {exc}") from exc
        if lang is None:
            no_language += 1
            continue
        if utt.duration < min_duration:
            report.too_short += 1
        elif utt.duration > max_duration:
            report.too_long += 1
        else:
            kept.append((utt, lang))
    if no_language:
        raise DataError(
            f"{shown}: {no_language} of {report.total} utterances have no \"language\"; "
            "pass --language (e.g. --language zh) or add it to the manifest"
        )
    kept = drop_unusable_audio(kept, report)
    if not kept and report.bad_audio:
        file, why = report.bad_audio[0]
        raise DataError(f"{shown}: no utterance with usable audio ({len(report.bad_audio)} unusable, e.g. {file}: "
                        f"{why}); fix the files or re-run `whisper-ft prepare`")
    if not kept:
        raise DataError(
            f"{shown}: no utterance left between --min_duration {min_duration} s and --max_duration {max_duration} s "
            f"({report.too_short} shorter, {report.too_long} longer)"
        )
    return kept, report


def audio_problem(utt: Utterance) -> str | None:
    """Why an utterance's audio cannot be trained on (undecodable, empty, slice outside the file), or None.

    A header probe (no full decode for wav/flac/ogg/mp3): cheap enough for every file before
    training, where a bad file would otherwise kill the run in a DataLoader worker.
    """
    from whisper_ft.core.audio import audio_info, slice_problem
    from whisper_ft.data.common import short_error

    try:
        total = audio_info(utt.audio_file).duration
    except Exception as exc:  # whatever a decoder raises: the file is unusable, not the run
        return short_error(exc, drop=str(utt.audio_file))  # the warning names the file already
    return slice_problem(utt.start_time, utt.end_time, total)


def drop_unusable_audio(pairs: list[tuple[Utterance, str]], report: ManifestReport,
                        examples: int = 5) -> list[tuple[Utterance, str]]:
    """Probe every file (in parallel); drop, count and name the unusable ones."""
    from whisper_ft.core.console import warn
    from whisper_ft.data.common import default_workers, parallel_map

    problems = list(parallel_map(audio_problem, [u for u, _ in pairs], default_workers(),
                                 desc=f"checking {report.name} audio", disable=not is_main_process()))
    kept = []
    for (utt, lang), problem in zip(pairs, problems):
        if problem is None:
            kept.append((utt, lang))
            continue
        report.bad_audio.append((str(utt.audio_file), problem))
        if is_main_process() and len(report.bad_audio) <= examples:
            warn(f"{report.path}: skipping utterance {utt.key} ({utt.audio_file}): {problem}")
    if is_main_process() and len(report.bad_audio) > examples:
        warn(f"{report.path}: {len(report.bad_audio) - examples} more utterances with unusable audio skipped")
    return kept

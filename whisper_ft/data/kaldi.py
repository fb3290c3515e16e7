"""Kaldi / wenet / MooER data folders -> one manifest.

``wav.scp``: ``UTTID path`` (or ``RECID path`` with ``segments``); ``text``: ``UTTID transcript``;
optional ``segments``: ``UTTID RECID start end`` (seconds). Relative audio paths are tried against
the current folder (Kaldi's convention: the recipe folder) and then against wav.scp's folder.
Piped entries (``cmd ... |``) are not run: they are skipped as unreadable, with the reason.
"""

from __future__ import annotations

from pathlib import Path

from whisper_ft.core.errors import DataError
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


def read_table(path: str | Path, what: str) -> dict[str, str]:
    """A Kaldi table: first token is the key, the rest of the line (stripped) is the value."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path} (pass --{what} with a Kaldi-style {what} file)")
    table: dict[str, str] = {}
    for line in read_text(path).splitlines():
        line = line.strip()
        if not line:
            continue
        key, *rest = line.split(maxsplit=1)
        table[key] = rest[0] if rest else ""
    return table


def read_segments(path: str | Path) -> list[tuple[str, str, float, float]]:
    """``UTTID RECID start end`` lines; a malformed line is a :class:`DataError` with its number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"segments file not found: {path} (pass --segments with a Kaldi segments file)")
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            utt, rec, start, end = parts[0], parts[1], float(parts[2]), float(parts[3])
        except (IndexError, ValueError) as exc:
            raise DataError(f"{path}:{lineno}: expected 'UTTID RECID START END' (seconds), got {line.strip()!r}") \
                from exc
        rows.append((utt, rec, start, end))
    return rows


def prepare_kaldi(wav_scp: str | Path, text: str | Path, output: str | Path = "dataset/train.jsonl",
                  segments: str | Path | None = None, options: PrepareOptions | None = None) -> PrepareReport:
    """Pair ``wav.scp`` (and ``segments``) with ``text`` and write ``output``."""
    options = options or PrepareOptions()
    wav_scp, output = Path(wav_scp), Path(output)
    wavs = read_table(wav_scp, "wav_scp")
    texts = read_table(text, "text")
    report = PrepareReport(source="kaldi", output=output)
    bases = (Path.cwd(), wav_scp.parent)
    candidates: list[Candidate] = []
    split = output.stem

    def audio_of(key: str, value: str) -> Path | None:
        if value.endswith("|"):
            report.skip(SkipReason.UNREADABLE_AUDIO, key, f"piped command not supported: {value!r} "
                                                          "(convert the audio to files first)")
            return None
        return resolve_path(value, *bases)

    if segments is None:
        for utt, value in wavs.items():
            if utt not in texts:
                report.skip(SkipReason.NO_TRANSCRIPT, f"{utt} ({value})")
                continue
            audio = audio_of(utt, value)
            if audio is not None:
                candidates.append(Candidate(audio, normalize_text(texts[utt]), split, id=utt))
        listed = set(wavs)
    else:
        listed = set()
        for utt, rec, start, end in read_segments(segments):
            listed.add(utt)
            if rec not in wavs:
                report.skip(SkipReason.MISSING_AUDIO, utt, f"recording {rec} is not in {wav_scp}")
                continue
            if utt not in texts:
                report.skip(SkipReason.NO_TRANSCRIPT, f"{utt} ({rec} {start:.2f}-{end:.2f} s)")
                continue
            if end <= start:
                report.skip(SkipReason.BAD_SLICE, utt, f"slice ends before it starts ({start:.2f}..{end:.2f} s)")
                continue
            audio = audio_of(utt, wavs[rec])
            if audio is not None:
                candidates.append(Candidate(audio, normalize_text(texts[utt]), split, id=utt, start=start, end=end))
    for utt in texts:
        if utt not in listed:
            report.skip(SkipReason.MISSING_AUDIO, utt, "in text, not in " + ("segments" if segments else "wav.scp"))
    by_split = select(candidates, options, report)
    by_split.setdefault(split, [])
    return write_splits(by_split, {split: output}, report)

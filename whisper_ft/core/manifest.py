"""The utterance manifest: JSON Lines, one utterance per line.

Compatible with Whisper-Finetune's records::

    {"audio": {"path": "wav/a.wav", "start_time": 1.0, "end_time": 4.2},   # times optional
     "sentence": "甚至出现交易几乎停滞的情况",
     "sentences": [{"start": 0.0, "end": 3.2, "text": "..."}],              # optional, for timestamps
     "language": "zh",                                                    # optional
     "duration": 3.2,
     "id": "BAC009S0764W0121"}                                            # optional

Relative audio paths resolve against the manifest's own folder. Unknown keys are kept on
round-trip (``Utterance.extra``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_ft.core.errors import DataError

_KNOWN_KEYS = {"audio", "sentence", "sentences", "language", "duration", "id"}


@dataclass
class TimedSentence:
    """A piece of the transcript with its start and end time in seconds (relative to the clip)."""

    start: float
    end: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}


@dataclass
class Utterance:
    """One manifest line: an audio file (or a slice of one) and its transcript."""

    audio_path: str
    sentence: str
    duration: float
    start_time: float | None = None
    end_time: float | None = None
    sentences: list[TimedSentence] | None = None
    language: str | None = None
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    root: Path | None = field(default=None, repr=False, compare=False)

    @property
    def audio_file(self) -> Path:
        """The audio path, resolved against the manifest's folder when relative."""
        p = Path(self.audio_path).expanduser()
        if not p.is_absolute() and self.root is not None:
            p = self.root / p
        return p

    @property
    def key(self) -> str:
        """A stable identifier: ``id`` when given, else the audio file's stem (+ start time)."""
        if self.id:
            return self.id
        stem = Path(self.audio_path).stem
        return stem if self.start_time is None else f"{stem}_{self.start_time:.2f}"

    def load_audio(self):
        """The utterance's samples, 16 kHz mono float32."""
        from whisper_ft.core.audio import load_audio

        return load_audio(self.audio_file, self.start_time, self.end_time)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        path = self.audio_path if self.root is None else str(self.audio_file)
        if relative_to is not None:
            try:
                path = os.path.relpath(self.audio_file.resolve(), relative_to.resolve())
            except ValueError:  # different drive on Windows
                path = str(self.audio_file.resolve())
        audio: dict[str, Any] = {"path": path}
        if self.start_time is not None:
            audio["start_time"] = round(self.start_time, 3)
        if self.end_time is not None:
            audio["end_time"] = round(self.end_time, 3)
        record: dict[str, Any] = {"audio": audio, "sentence": self.sentence}
        if self.sentences is not None:
            record["sentences"] = [s.to_dict() for s in self.sentences]
        if self.language:
            record["language"] = self.language
        record["duration"] = round(self.duration, 3)
        if self.id:
            record["id"] = self.id
        record.update(self.extra)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], root: Path | None = None) -> Utterance:
        """Parse one record; raises ValueError with what is wrong."""
        if not isinstance(record, dict):
            raise ValueError("a record must be a JSON object")
        audio = record.get("audio")
        if isinstance(audio, str):
            audio = {"path": audio}
        if not isinstance(audio, dict) or not isinstance(audio.get("path"), str) or not audio["path"]:
            raise ValueError('missing "audio": {"path": ...}')
        sentence = record.get("sentence")
        text_key = "sentence"
        if sentence is None and isinstance(record.get("text"), str):  # {"audio": ..., "text": ...} manifests
            sentence, text_key = record["text"], "text"
        if not isinstance(sentence, str):
            raise ValueError('missing "sentence" (the transcript, a string)')
        duration = record.get("duration")
        if not isinstance(duration, (int, float)) or duration < 0:
            raise ValueError('missing or negative "duration" (seconds, a number)')
        sentences = None
        if record.get("sentences") is not None:
            raw = record["sentences"]
            if not isinstance(raw, list):
                raise ValueError('"sentences" must be a list of {"start", "end", "text"}')
            sentences = []
            for s in raw:
                try:
                    ts = TimedSentence(float(s["start"]), float(s["end"]), str(s["text"]))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError('each of "sentences" needs numeric "start", "end" and a "text"') from exc
                if ts.end < ts.start:
                    raise ValueError(f"sentence ends before it starts: {ts.start} > {ts.end}")
                sentences.append(ts)
        start, end = audio.get("start_time"), audio.get("end_time")
        return cls(
            audio_path=audio["path"],
            sentence=sentence,
            duration=float(duration),
            start_time=None if start is None else float(start),
            end_time=None if end is None else float(end),
            sentences=sentences,
            language=record.get("language") or None,
            id=None if record.get("id") is None else str(record["id"]),
            extra={k: v for k, v in record.items() if k not in _KNOWN_KEYS and k != text_key},
            root=root,
        )


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest; raises :class:`DataError` naming the file and line of the first bad record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (create one with `whisper-ft prepare ...`)")
    root = path.parent
    utterances = []
    with path.open("rb") as f:
        # Bytes, decoded per line: a bad byte is reported with its line number. utf-8-sig: editors
        # on Windows (Notepad, Excel's "UTF-8 CSV") start the file with a byte-order mark.
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                f"{exc.start + 1}); save the manifest as UTF-8") from None
            if not line:
                continue
            try:
                utterances.append(Utterance.from_dict(json.loads(line), root=root))
            except (json.JSONDecodeError, ValueError) as exc:
                raise DataError(f"{path}:{lineno}: invalid manifest record: {exc}") from exc
    return utterances


def write_manifest(path: str | Path, utterances: Iterable[Utterance], relative: bool = True) -> int:
    """Write atomically (temp file in the same folder, then rename); returns the number of lines.

    With ``relative``, audio paths are written relative to the manifest's folder so the folder
    can be moved as a whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for utt in utterances:
                record = utt.to_dict(relative_to=path.parent if relative else None)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a manifest is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class ManifestCheck:
    """What :func:`validate_manifest` found."""

    path: Path
    utterances: list[Utterance]
    missing_audio: list[Utterance]
    hours: float

    def summary(self) -> str:
        return (
            f"{self.path}: {len(self.utterances)} utterances, {self.hours:.2f} h, "
            f"{len(self.missing_audio)} with missing audio"
        )


def validate_manifest(path: str | Path, check_audio: bool = True, allow_empty: bool = False) -> ManifestCheck:
    """Parse a manifest and check that it is usable; raises :class:`DataError` when it is not."""
    utterances = read_manifest(path)
    if not utterances and not allow_empty:
        raise DataError(f"manifest is empty: {path} (prepare data with `whisper-ft prepare ...`)")
    missing = [u for u in utterances if check_audio and not u.audio_file.is_file()]
    hours = sum(u.duration for u in utterances) / 3600
    return ManifestCheck(Path(path), utterances, missing, hours)

"""``whisper-ft infer`` / ``infer-ct2``: transcribe audio files and folders, write or print results.

Inputs are files or folders (searched recursively for audio). A missing, unreadable or failing
file does not stop the run: every failure is collected, reported at the end, and the run fails
(:class:`WhisperFtError`, exit 1) if any file failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from whisper_ft.console import log, warn
from whisper_ft.decoding.results import Segment, Transcription, Word
from whisper_ft.errors import WhisperFtError
from whisper_ft.writers import output_path, render, to_json, validate_format, write_transcription


@dataclass
class Failure:
    path: str
    message: str


@dataclass
class InferRun:
    """What a run did: the transcriptions made, where they went, and what failed."""

    transcriptions: list[Transcription] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0

    def raise_for_failures(self) -> None:
        if self.failures:
            for f in self.failures:
                log(f"failed: {f.path}: {f.message}")
            total = len(self.failures) + len(self.transcriptions)
            raise WhisperFtError(f"{len(self.failures)} of {total} inputs failed (listed above); the others were done")


def collect_audio_files(inputs: list[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Expand folders (recursively, audio extensions only, sorted); missing paths become failures."""
    files: list[Path] = []
    failures: list[Failure] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                failures.append(Failure(str(p), f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            failures.append(Failure(str(p), "audio file not found (check the path)"))
    return files, failures


def simplify_transcription(t: Transcription) -> Transcription:
    """Traditional -> simplified Chinese in every segment and word."""
    from whisper_ft.text import to_simplified

    segments = []
    for s in t.segments:
        words = None if s.words is None else [Word(w.start, w.end, to_simplified(w.word), w.probability)
                                               for w in s.words]
        segments.append(Segment(s.id, s.start, s.end, to_simplified(s.text), s.tokens, s.avg_logprob,
                                s.no_speech_prob, words))
    return Transcription(t.language, t.duration, segments, t.language_probability, t.source)


def run_inference(
    inputs: list[str | Path],
    transcribe: Callable[[object, str], Transcription],
    *,
    fmt: str = "json",
    output_dir: str | Path | None = None,
    to_simplified: bool = False,
    stdout=None,
) -> InferRun:
    """Transcribe every input with ``transcribe(audio_array, path)``; write each result to
    ``output_dir/<stem>.<fmt>`` or, without ``output_dir``, print it on stdout. Failures are
    collected in the returned :class:`InferRun` (call ``raise_for_failures`` at the end)."""
    fmt = validate_format(fmt)
    stdout = stdout or sys.stdout
    files, failures = collect_audio_files(inputs)
    run = InferRun(failures=failures)
    if not files and not failures:
        raise WhisperFtError("no audio given: pass audio files or folders")
    if len(files) > 1 and output_dir is None and fmt in ("srt", "vtt"):
        raise WhisperFtError(f"{len(files)} audio files with --format {fmt}: give --output_dir to write one file each")
    stems: dict[str, Path] = {}
    for path in files:
        try:
            audio = load_audio(path)
            t0 = time.perf_counter()
            result = transcribe(audio, str(path))
            run.decode_seconds += time.perf_counter() - t0
            run.audio_seconds += len(audio) / SAMPLE_RATE
            if to_simplified:
                result = simplify_transcription(result)
            run.transcriptions.append(result)
            if output_dir is not None:
                out = output_path(path, output_dir, fmt)
                if out.stem in stems and stems[out.stem] != path:
                    out = out.with_name(f"{path.parent.name}_{out.name}")
                    warn(f"two inputs named {path.stem}: writing {out.name}")
                stems[out.stem] = path
                run.written.append(write_transcription(result, out, fmt))
                log(f"{path} -> {out}")
            elif fmt == "json" and len(files) > 1:
                stdout.write(to_json(result, indent=None, extra={"audio": str(path)}))
            else:
                stdout.write(render(result, fmt))
            stdout.flush()
        except WhisperFtError as exc:
            run.failures.append(Failure(str(path), str(exc)))
        except Exception as exc:  # a decoding failure on one file must not stop the others
            run.failures.append(Failure(str(path), f"{type(exc).__name__}: {exc}"))
    if run.audio_seconds:
        log(f"{len(run.transcriptions)} file(s), {run.audio_seconds:.1f} s of audio in {run.decode_seconds:.1f} s "
            f"(RTF {run.decode_seconds / run.audio_seconds:.3f})")
    return run

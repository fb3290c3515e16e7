"""``whisper-ft infer`` / ``infer-ct2``: transcribe audio files and folders, write or print results.

Inputs are files or folders (searched recursively for audio). The output folder is checked before
anything is decoded. A missing, unreadable or failing file does not stop the run: every failure is
collected, reported at the end, and the run fails (:class:`WhisperFtError`, exit 1) if any file
failed. Several transcripts printed as text are each headed ``==> file <==`` (like ``head``). A long
input shows a progress bar (seconds of audio done) on stderr as its segments are decoded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.core.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from whisper_ft.core.console import log, progress, warn
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription, Word
from whisper_ft.core.writers import (
    check_output_dir,
    formats_of,
    output_path,
    render,
    to_json,
    validate_format,
    write_transcription,
)

PROGRESS_FROM_SECONDS = 60.0  # inputs at least this long show a progress bar on stderr
VAD_HINT_FROM_SECONDS = 600.0  # longer inputs transcribed without VAD get a hint to use it

# transcribe(audio, path, on_segment): on_segment(segment) may be called as segments are decoded
Transcriber = Callable[[object, str, Callable[[Segment], None] | None], Transcription]


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
    n_inputs: int = 0  # audio files found + inputs that are not (missing paths, empty folders)

    def raise_for_failures(self) -> None:
        if self.failures:
            for f in self.failures:
                log(f"failed: {f.path}: {f.message}")
            if len(self.failures) == self.n_inputs == 1:
                raise WhisperFtError(f"{self.failures[0].path}: {self.failures[0].message}")
            others = "; the others were done" if len(self.failures) < self.n_inputs else ""
            raise WhisperFtError(f"{len(self.failures)} of {self.n_inputs} inputs failed (listed above){others}")


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
    from whisper_ft.core.text import to_simplified

    segments = []
    for s in t.segments:
        words = None if s.words is None else [Word(w.start, w.end, to_simplified(w.word), w.probability)
                                               for w in s.words]
        segments.append(Segment(s.id, s.start, s.end, to_simplified(s.text), s.tokens, s.avg_logprob,
                                s.no_speech_prob, words))
    return Transcription(t.language, t.duration, segments, t.language_probability, t.source)


def _progress_bar(path: Path, seconds: float, show: bool):
    """A bar in seconds of audio for a long input, and the ``on_segment`` callback that moves it."""
    if not show or seconds < PROGRESS_FROM_SECONDS:
        return None, None
    bar = progress(None, total=round(seconds), desc=path.name, unit="s")

    def on_segment(segment: Segment) -> None:
        bar.update(max(0, min(round(segment.end), bar.total) - bar.n))

    return bar, on_segment


def run_inference(
    inputs: list[str | Path],
    transcribe: Transcriber,
    *,
    fmt: str = "json",
    output_dir: str | Path | None = None,
    to_simplified: bool = False,
    stdout=None,
    show_progress: bool = True,
    vad_hint: bool = False,
) -> InferRun:
    """Transcribe every input with ``transcribe(audio_array, path, on_segment)``; write each result
    to ``output_dir/<stem>.<fmt>`` or, without ``output_dir``, print it on stdout. Failures are
    collected in the returned :class:`InferRun` (call ``raise_for_failures`` at the end).
    ``vad_hint``: suggest ``--vad`` for inputs over 10 minutes (the caller decodes without it)."""
    fmt = validate_format(fmt, allow_all=True)
    stdout = stdout or sys.stdout
    if fmt == "all" and output_dir is None:
        raise WhisperFtError("--format all writes one file per format: give --output_dir")
    files, failures = collect_audio_files(inputs)
    run = InferRun(failures=failures, n_inputs=len(files) + len(failures))
    if not files and not failures:
        raise WhisperFtError("no audio given: pass audio files or folders")
    if len(files) > 1 and output_dir is None and fmt in ("srt", "vtt"):
        raise WhisperFtError(f"{len(files)} audio files with --format {fmt}: give --output_dir to write one file each")
    if output_dir is not None and files:
        check_output_dir(output_dir)  # before decoding, not after every file
    stems: dict[str, Path] = {}
    for path in files:
        bar = None
        try:
            audio = load_audio(path)
            seconds = len(audio) / SAMPLE_RATE
            if vad_hint and seconds > VAD_HINT_FROM_SECONDS:
                log(f"hint: {path} is {seconds / 60:.0f} min long: --vad skips its silences "
                    "(faster, less memory, no text made up in the silences)")
            bar, on_segment = _progress_bar(path, seconds, show_progress)
            t0 = time.perf_counter()
            result = transcribe(audio, str(path), on_segment)
            run.decode_seconds += time.perf_counter() - t0
            run.audio_seconds += seconds
            if to_simplified:
                result = simplify_transcription(result)
            if output_dir is not None:
                for f in formats_of(fmt):
                    out = output_path(path, output_dir, f)
                    if out.stem in stems and stems[out.stem] != path:
                        out = out.with_name(f"{path.parent.name}_{out.name}")
                        warn(f"two inputs named {path.stem}: writing {out.name}")
                    run.written.append(write_transcription(result, out, f))
                    log(f"{path} -> {out}")
                stems[out.stem] = path
            elif fmt == "json" and len(files) > 1:
                stdout.write(to_json(result, indent=None, extra={"audio": str(path)}))
            elif fmt == "txt" and len(files) > 1:  # which transcript is which: a header per file, as head(1) does
                separator = "\n" if run.transcriptions else ""
                stdout.write(f"{separator}==> {path} <==\n{render(result, fmt)}")
            else:
                stdout.write(render(result, fmt))
            stdout.flush()
            run.transcriptions.append(result)
        except WhisperFtError as exc:
            run.failures.append(Failure(str(path), str(exc)))
        except OSError as exc:  # e.g. the output folder became unwritable
            run.failures.append(Failure(str(path), f"{exc.strerror or exc}"))
        except Exception as exc:  # a decoding failure on one file must not stop the others
            run.failures.append(Failure(str(path), f"{type(exc).__name__}: {exc}"))
        finally:
            if bar is not None:
                bar.close()
    if run.audio_seconds:
        log(f"{len(run.transcriptions)} file(s), {run.audio_seconds:.1f} s of audio in {run.decode_seconds:.1f} s "
            f"(RTF {run.decode_seconds / run.audio_seconds:.3f})")
    return run

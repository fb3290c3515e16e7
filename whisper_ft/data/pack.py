"""`whisper-ft prepare pack`: a manifest of short clips -> a manifest of packed 30 s windows.

Whisper encodes 30 s windows whatever the clip length, so training on 3-5 s clips spends most of
the encoder's time (and memory) on padding. Packing lays same-language clips one after another
with a gap of silence between them (first fit in a seeded random order, so a window mixes
clips rather than holding similar ones; see whisper_ft.decoding.packing) and writes one
wav per window; each record keeps every clip's text with its time in the window as
``sentences``, so `finetune --timestamps` trains timestamp tokens on them (and plain text, the
clips' transcripts joined, on the others). The decoder learns the same per-clip text; the encoder
sees 4-6 clips per window instead of one. A clip that fills a window alone is kept as it was.

The packed wavs go to ``<output stem>_wav/`` next to the output manifest; a re-run with the same
input rewrites identical files (windows are named by the ids they hold).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from whisper_ft.core.errors import DataError
from whisper_ft.core.manifest import TimedSentence, Utterance, read_manifest
from whisper_ft.core.text import cer_ignores_spaces
from whisper_ft.data.common import PrepareReport, SkipReason, write_splits
from whisper_ft.decoding.packing import PACK_GAP_SECONDS, PACK_WINDOW_SECONDS, packed_audio, plan_packed_windows

MAX_WINDOW_SECONDS = 30.0  # Whisper's input window: a packed window must fit in it


def join_texts(texts: list[str], language: str | None) -> str:
    """Clip transcripts as one text: no separator for languages written without spaces."""
    sep = "" if language and cer_ignores_spaces(language) else " "
    return sep.join(t.strip() for t in texts if t.strip())


def _window_id(ids: list[str]) -> str:
    return "packed-" + hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()[:16]


def pack_manifest(
    manifest: str | Path,
    output: str | Path,
    *,
    window_seconds: float = PACK_WINDOW_SECONDS,
    gap: float = PACK_GAP_SECONDS,
    seed: int = 0,
) -> PrepareReport:
    """Pack ``manifest``'s clips into windows of at most ``window_seconds``; write ``output``."""
    from whisper_ft.core.audio import write_wav

    manifest, output = Path(manifest), Path(output)
    if not 0 < window_seconds <= MAX_WINDOW_SECONDS:
        raise DataError(f"--window_seconds must be in (0, {MAX_WINDOW_SECONDS:g}] (got {window_seconds})")
    if gap < 0 or gap >= window_seconds:
        raise DataError(f"--gap must be in [0, --window_seconds) seconds (got {gap})")
    if output.resolve() == manifest.resolve():
        raise DataError(f"--output is the input manifest {manifest}: write the packed manifest elsewhere")
    utterances = read_manifest(manifest)
    if not utterances:
        raise DataError(f"{manifest} has no records: nothing to pack")
    report = PrepareReport(source="pack", output=output)
    windows = plan_packed_windows([u.duration for u in utterances], [u.language for u in utterances],
                                  gap=gap, window_seconds=window_seconds, shuffle_seed=seed)
    wav_dir = output.parent / f"{output.stem}_wav"
    records: list[Utterance] = []
    for window in windows:
        clips = [utterances[i] for i in window.indices]
        if len(clips) == 1:  # fills a window alone: unchanged
            records.append(clips[0])
            report.work["clips_alone"] += 1
            continue
        try:
            audio = packed_audio({i: utterances[i].load_audio() for i in window.indices}, window, gap)
        except DataError as exc:
            # one unreadable clip: pack the others on the next run, say which one now
            raise DataError(f"{exc} (while packing {manifest}; fix or drop that record)") from exc
        if len(audio) > MAX_WINDOW_SECONDS * 16_000:
            raise DataError(f"window of {len(audio) / 16_000:.1f} s exceeds 30 s: lower --window_seconds")
        ids = [u.key for u in clips]
        path = wav_dir / f"{_window_id(ids)}.wav"
        write_wav(path, audio)
        sentences: list[TimedSentence] = []
        for u, (start, end) in zip(clips, window.spans):
            if u.sentences:  # the clip's own sentence times, moved to where the clip now starts
                sentences += [TimedSentence(start + s.start, min(end, start + s.end), s.text) for s in u.sentences]
            else:
                sentences.append(TimedSentence(start, end, u.sentence))
        records.append(Utterance(
            audio_path=str(path.resolve()), sentence=join_texts([u.sentence for u in clips], window.language),
            duration=round(window.seconds, 3), sentences=sentences, language=window.language, id=path.stem,
            extra={"packed": ids},
        ))
        report.work["windows_written"] += 1
        report.work["clips_packed"] += len(clips)
    if not records:
        report.skip(SkipReason.INVALID_RECORD, str(manifest), "nothing to pack")
    return write_splits({"train": records}, {"train": output}, report)

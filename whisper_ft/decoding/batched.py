"""Decoding for a server: several requests' short clips in one CTranslate2 batch, with timed
segments and the per-segment fields OpenAI's ``verbose_json`` reports.

- :func:`transcribe_clips_ct2` decodes clips of at most 30 s (each with its own language, task,
  prompt and temperature) through ``ctranslate2.models.Whisper.generate`` in one batch, with
  timestamps, and splits each clip's output into :class:`VerboseSegment`. A clip whose output
  looks like a loop or a failed decode at temperature 0 is flagged ``needs_fallback`` so the caller
  can decode it again with faster-whisper's temperature fallback (what OpenAI's temperature 0 does).
- a file of any length goes through :func:`whisper_ft.decoding.ct2_transcribe.transcribe_ct2` (the
  one long-form decoder of ``infer-ct2``, ``eval`` and the server), which uses :func:`prompt_tokens`
  and :func:`clip_token_budget` from here.

It takes a :class:`whisper_ft.decoding.ct2.CT2Whisper` from ``load_ct2_whisper``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_ft.core.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription
from whisper_ft.decoding.ct2_loading import CT2Whisper, ct2_features, detect_languages_ct2, model_suppress_tokens
from whisper_ft.models.generation import MAX_TARGET_TOKENS, ct2_max_length

# faster-whisper's defaults (TranscriptionOptions), so both paths judge a decode the same way
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s / 0.02 s
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_PROMPT_TOKENS = MAX_TARGET_TOKENS // 2 - 1  # 223: Whisper keeps the last ones of a longer prompt
# A short clip's output budget: speech is at most a few tokens a second (fast Mandarin with
# timestamps is under 10); a clip that needs more is looping on noise or a hostile prompt.
TOKENS_PER_SECOND, MIN_NEW_TOKENS = 16, 32


class DecodeCancelled(Exception):
    """The caller asked to stop (its client left, or the server is shutting down)."""


def clip_token_budget(duration: float, max_new_tokens: int | None = None) -> int:
    """New tokens a clip of ``duration`` seconds may produce (at most ``max_new_tokens``)."""
    budget = MIN_NEW_TOKENS + int(TOKENS_PER_SECOND * duration)
    return min(budget, max_new_tokens) if max_new_tokens else budget


def prompt_tokens(tok, prompt: str | None) -> list[int]:
    """The prompt's tokens as Whisper uses them: the last :data:`MAX_PROMPT_TOKENS`, saying so
    when a longer prompt is cut."""
    if not prompt or not prompt.strip():
        return []
    tokens = tok.encode(" " + prompt.strip())
    if len(tokens) > MAX_PROMPT_TOKENS:
        from whisper_ft.core.console import log

        log(f"prompt of {len(tokens)} tokens: only its last {MAX_PROMPT_TOKENS} are used (Whisper's limit)")
        tokens = tokens[-MAX_PROMPT_TOKENS:]
    return tokens


@dataclass
class VerboseSegment(Segment):
    """A :class:`Segment` with the decode's quality fields (OpenAI ``verbose_json`` segments)."""

    seek: int = 0  # mel frame (10 ms) where the decoded window starts
    temperature: float = 0.0
    compression_ratio: float = 0.0


@dataclass(frozen=True)
class Clip:
    """One request's short audio (at most 30 s) and how to decode it."""

    audio: np.ndarray
    language: str | None = None
    task: str = "transcribe"
    prompt: str | None = None  # OpenAI's ``prompt``: text of a previous window (faster-whisper's initial_prompt)
    temperature: float = 0.0


@dataclass
class ClipResult:
    transcription: Transcription
    needs_fallback: bool = False  # looped or failed at temperature 0: decode again with the fallback schedule
    unfinished_from: float | None = None  # the output ends in a segment without its closing timestamp


def compression_ratio(text: str) -> float:
    from faster_whisper.transcribe import get_compression_ratio

    return float(get_compression_ratio(text)) if text else 0.0


def _tokenizer(ct2: CT2Whisper, language: str | None, task: str):
    from faster_whisper.tokenizer import Tokenizer

    return Tokenizer(ct2.model.hf_tokenizer, ct2.is_multilingual, task=task, language=language)


def split_timestamped_tokens(tokens: list[int], *, timestamp_begin: int, eot: int,
                             duration: float) -> list[tuple[float, float, list[int]]]:
    """``(start, end, text tokens)`` pieces of one window's timestamped output.

    ``<|t0|> text <|t1|>`` is one piece; text after the last timestamp (an unfinished segment, or
    output without timestamps) runs to ``duration``. Times are capped at ``duration``."""
    from whisper_ft.decoding.timestamps import parse_timestamp_tokens

    parsed = parse_timestamp_tokens(tokens, timestamp_begin=timestamp_begin, eot=eot)
    pieces = [(min(s, duration), min(e, duration), toks) for s, e, toks in parsed.segments]
    if parsed.open_tokens:
        pieces.append((min(parsed.open_start, duration), duration, parsed.open_tokens))
    return [(min(s, e), e, toks) for s, e, toks in pieces if toks]


def _languages(ct2: CT2Whisper, clips: list[Clip], features: np.ndarray) -> list[str]:
    import ctranslate2

    langs = [c.language for c in clips]
    if not ct2.is_multilingual:
        return [lang or "en" for lang in langs]
    missing = [i for i, lang in enumerate(langs) if lang is None]
    if missing:
        detected = detect_languages_ct2(ct2, ctranslate2.StorageView.from_array(np.ascontiguousarray(features[missing])))
        for i, (code, _) in zip(missing, detected):
            langs[i] = code
    return langs  # type: ignore[return-value]


def transcribe_clips_ct2(
    ct2: CT2Whisper,
    clips: list[Clip],
    *,
    beam_size: int = 5,
    max_new_tokens: int | None = None,
    pack: bool = False,
    pack_max_seconds: float | None = None,  # None: PACK_MAX_CLIP_SECONDS (below)
    stats: dict | None = None,
) -> list[ClipResult]:
    """Decode short clips together (one ``generate`` per prompt length and temperature, queued at
    once) with timestamps; see the module docstring. ``pack=True``: see :func:`transcribe_packed_ct2`
    (which counts windows and clips into ``stats``)."""
    import ctranslate2

    if pack:
        return transcribe_packed_ct2(ct2, clips, beam_size=beam_size, max_new_tokens=max_new_tokens,
                                     max_clip_seconds=pack_max_seconds, stats=stats)

    if beam_size < 1:
        raise WhisperFtError(f"beam_size must be at least 1 (got {beam_size})")
    if not clips:
        return []
    durations = [len(c.audio) / SAMPLE_RATE for c in clips]
    for d in durations:
        if d > CHUNK_SECONDS + 0.01:
            raise WhisperFtError(f"a clip of {d:.1f} s is longer than {CHUNK_SECONDS} s: use whisper_ft.decoding.ct2_transcribe.transcribe_ct2")
    features = ct2_features(ct2, [c.audio for c in clips])
    langs = _languages(ct2, clips, features)
    tokenizers = [_tokenizer(ct2, lang, c.task) for lang, c in zip(langs, clips)]
    prompts = []
    for c, tok in zip(clips, tokenizers):
        prompts.append(ct2.model.get_prompt(tok, prompt_tokens(tok, c.prompt), without_timestamps=False))
    # CTranslate2 decodes one prompt length and one sampling setting per call
    # (and one length limit: clips are grouped by their token budget too)
    budgets = [clip_token_budget(d, max_new_tokens) for d in durations]
    groups: dict[tuple[int, float, int], list[int]] = {}
    for i, (c, p) in enumerate(zip(clips, prompts)):
        groups.setdefault((len(p), float(c.temperature), budgets[i]), []).append(i)
    suppress = model_suppress_tokens(ct2.path)
    queued = []
    for (plen, temperature, budget), idx in groups.items():
        max_length = ct2_max_length(budget, plen)  # the budget in new tokens, whatever the prompt's length
        sampling = ({"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature} if temperature > 0
                    else {"beam_size": beam_size})
        part = ct2.engine.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[idx])), [prompts[i] for i in idx],
            max_length=max_length, return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=suppress, max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
            asynchronous=True, **sampling)
        queued.append((idx, part))
    results: list[ClipResult | None] = [None] * len(clips)
    for idx, part in queued:
        for i, async_result in zip(idx, part):
            results[i] = _clip_result(clips[i], tokenizers[i], langs[i], durations[i], async_result.result())
    return results  # type: ignore[return-value]


def _clip_result(clip: Clip, tok, language: str, duration: float, result) -> ClipResult:
    tokens = list(result.sequences_ids[0])
    avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)  # faster-whisper's recovery, length_penalty 1
    no_speech = float(result.no_speech_prob)
    text_all = tok.decode([t for t in tokens if t < tok.eot]).strip()
    ratio = compression_ratio(text_all)
    silent = no_speech > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
    segments: list[Segment] = []
    if not silent:
        for start, end, toks in split_timestamped_tokens(tokens, timestamp_begin=tok.timestamp_begin, eot=tok.eot,
                                                         duration=duration):
            text = tok.decode(toks).strip()
            if text:
                segments.append(VerboseSegment(len(segments), start, end, text, toks, avg_logprob, no_speech, None,
                                               seek=0, temperature=clip.temperature, compression_ratio=ratio))
    needs_fallback = (clip.temperature == 0 and not silent
                      and (ratio > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD))
    unfinished = None
    if tokens and tok.eot > tokens[-1] and segments:  # text after the last timestamp
        unfinished = segments[-1].start
    return ClipResult(Transcription(language=language, duration=duration, segments=segments), needs_fallback, unfinished)


# --- packing: several requests' clips in one 30 s window --------------------------------------
#
# On CPU the encoder's 30 s window is most of the cost of a short clip, so batching alone buys
# little; sharing windows (the fast path of ``eval --pack``, see whisper_ft.decoding.packing) is what lets
# throughput grow with concurrency. Each window segment goes to the clip it overlaps, shifted to
# the clip's time; a clip whose share is not clean (a segment across two clips or in a gap, an
# unfinished or looping window, no text) is decoded again in a window of its own.

from whisper_ft.decoding.packing import PACK_OVERLAP_TOLERANCE  # noqa: E402  (seconds a segment may spill into a neighbour)

# Longer clips are decoded alone, exactly as unpacked. A long clip's transcript can flip on any change
# of its window (the 12.4 s meeting clip of ../shared/audio: beam 5 CER 29.3 alone, 37.9 packed, and
# 37.9 alone too when shifted by 1 s of leading silence), and a flip moves many characters at once;
# packing it saves little (it fills ~40 % of a window on its own). Measured: benchmarks/pack_accuracy.py.
PACK_MAX_CLIP_SECONDS = 10.0


def transcribe_packed_ct2(ct2: CT2Whisper, clips: list[Clip], *, beam_size: int = 5,
                          max_new_tokens: int | None = None, max_clip_seconds: float | None = None,
                          stats: dict | None = None) -> list[ClipResult]:
    """:func:`transcribe_clips_ct2` with same-language, same-task clips (temperature 0, no prompt,
    language given, at most ``max_clip_seconds`` long, default :data:`PACK_MAX_CLIP_SECONDS`;
    ``float("inf")``: any) sharing 30 s windows; every other clip is decoded in its own window."""
    from whisper_ft.decoding.packing import PACK_GAP_SECONDS, add_packing_stats, packed_audio, plan_packed_windows

    limit = PACK_MAX_CLIP_SECONDS if max_clip_seconds is None else max_clip_seconds
    keys = [f"{c.language}|{c.task}" if (c.language and not c.prompt and c.temperature == 0
                                        and len(c.audio) <= limit * SAMPLE_RATE) else None for c in clips]
    packable = [i for i, k in enumerate(keys) if k is not None]
    windows = plan_packed_windows([len(clips[i].audio) / SAMPLE_RATE for i in packable], [keys[i] for i in packable])
    for w in windows:
        w.indices = [packable[i] for i in w.indices]
    shared = [w for w in windows if len(w.indices) > 1]
    in_shared = {i for w in shared for i in w.indices}
    alone = [i for i in range(len(clips)) if i not in in_shared]
    window_clips = [Clip(packed_audio([c.audio for c in clips], w, PACK_GAP_SECONDS), clips[w.indices[0]].language,
                         clips[w.indices[0]].task) for w in shared]
    first = transcribe_clips_ct2(ct2, window_clips + [clips[i] for i in alone], beam_size=beam_size,
                                 max_new_tokens=max_new_tokens)
    results: list[ClipResult | None] = [None] * len(clips)
    for i, r in zip(alone, first[len(shared):]):
        results[i] = r
    again = []
    for w, r in zip(shared, first[: len(shared)]):
        split = None if r.needs_fallback else _split_window(r, w, [len(clips[i].audio) / SAMPLE_RATE for i in w.indices])
        for k, i in enumerate(w.indices):
            if split is None or split[k] is None:
                again.append(i)
            else:
                results[i] = split[k]
    if again:
        for i, r in zip(again, transcribe_clips_ct2(ct2, [clips[i] for i in again], beam_size=beam_size,
                                                    max_new_tokens=max_new_tokens)):
            results[i] = r
    add_packing_stats(stats, len(clips), shared, len(again))
    return results  # type: ignore[return-value]


def _split_window(result: ClipResult, window, durations: list[float]) -> list[ClipResult | None]:
    """Each clip's share of a packed window's segments (times shifted to the clip), or None where
    the share is not trustworthy (judged by :func:`whisper_ft.decoding.packing.assign_packed_segments`, the
    same rules as ``eval``'s packed path)."""
    from whisper_ft.decoding.packing import assign_packed_segments

    segments = result.transcription.segments
    shares = assign_packed_segments([(seg.start, seg.end, seg) for seg in segments], window,
                                    unfinished_from=result.unfinished_from, tolerance=PACK_OVERLAP_TOLERANCE)
    language = result.transcription.language
    out: list[ClipResult | None] = []
    for k, share in enumerate(shares):
        if not share:
            out.append(None)
            continue
        offset, segs = window.spans[k][0], []
        for seg in share:
            end = min(max(seg.end - offset, 0.0), durations[k])
            segs.append(VerboseSegment(len(segs), min(max(seg.start - offset, 0.0), end), end, seg.text, seg.tokens,
                                       seg.avg_logprob, seg.no_speech_prob, None, seek=0,
                                       temperature=getattr(seg, "temperature", 0.0),
                                       compression_ratio=getattr(seg, "compression_ratio", 0.0)))
        out.append(ClipResult(Transcription(language=language, duration=durations[k], segments=segs)))
    return out

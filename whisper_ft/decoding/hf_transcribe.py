"""Transcribe audio of any length with a transformers Whisper (``whisper-ft infer``).

Up to 30 s: one window, generated with timestamps (deterministic). Longer: transformers'
sequential long-form decoding (30 s windows, each one starting where the last complete segment
ended, with OpenAI's fallback settings, see ``LONG_FORM_OPTIONS``; ``temperature_fallback=False``
decodes greedily, see ``DETERMINISTIC_LONG_FORM_OPTIONS``). The language, when not given, is
detected on the first 30 s.
"""

from __future__ import annotations

import numpy as np

from whisper_ft.core.audio import CHUNK_SECONDS, N_SAMPLES, SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.languages import normalize_language
from whisper_ft.core.results import Segment, Transcription
from whisper_ft.decoding.hf import (
    decode_text,
    generate_token_ids,
    generation_prompt_kwargs,
    unwrap_model,
    validate_task,
)
from whisper_ft.models.generation import language_token_ids, special_token_ids

# OpenAI's transcribe() defaults, which faster-whisper shares: condition each window on the
# previous text and retry a window at higher temperatures when it looks like a hallucination
# (gzip ratio 1.35 in transformers ~ zlib 2.4 in OpenAI) or a low-confidence skip. Without them
# whisper-base skipped a whole 30 s window of our Mandarin test audio.
LONG_FORM_OPTIONS = {
    "condition_on_prev_tokens": True,
    "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    "compression_ratio_threshold": 1.35,
    "logprob_threshold": -1.0,
    "no_speech_threshold": 0.6,
}

# The same, at temperature 0 only: no sampling, so the same input always gives the same text.
# Evaluation uses this on both backends (faster-whisper: temperature=0.0 with its defaults, which
# are the settings above), so `eval` and `convert --verify` compare like with like.
DETERMINISTIC_LONG_FORM_OPTIONS = {**LONG_FORM_OPTIONS, "temperature": 0.0}


def _param(model):
    return next(unwrap_model(model).parameters())


def detect_language_hf(model, processor, input_features) -> list[tuple[str, float]]:
    """``[(code, probability)]`` per window: the decoder's first-step distribution over language
    tokens after ``<|startoftranscript|>``. English-only models answer ``("en", 1.0)``."""
    import torch

    tok = processor.tokenizer
    lang_ids = language_token_ids(tok)
    n = input_features.shape[0]
    if len(lang_ids) <= 1:
        return [("en", 1.0)] * n
    inner = unwrap_model(model)
    p = _param(model)
    features = input_features.to(device=p.device, dtype=p.dtype)
    sot = special_token_ids(tok)["sot"]
    codes = [t[2:-2] for t in lang_ids]
    ids = torch.tensor(list(lang_ids.values()), device=p.device)
    with torch.inference_mode():
        logits = inner(input_features=features, decoder_input_ids=torch.full((n, 1), sot, device=p.device)).logits
        probs = torch.softmax(logits[:, -1, ids].float(), dim=-1)
    best = probs.argmax(dim=-1)
    return [(codes[int(b)], float(probs[i, b])) for i, b in enumerate(best)]


def segments_from_tokens(tokens: list[int], tokenizer, *, time_offset: float = 0.0, first_id: int = 0) -> list[Segment]:
    """Cut a generated sequence with timestamp tokens (``<|0.00|> text <|2.40|><|2.40|> ...``) into
    segments (:func:`whisper_ft.decoding.timestamps.parse_timestamp_tokens`); text outside a closed
    pair (a missing end timestamp) runs to the end of the window; segments without text are dropped."""
    from whisper_ft.decoding.timestamps import parse_timestamp_tokens
    from whisper_ft.models.vocabulary import vocabulary_of

    vocab = vocabulary_of(tokenizer)
    parsed = parse_timestamp_tokens(tokens, timestamp_begin=vocab.timestamp_begin, eot=vocab.eot)
    pieces = list(parsed.segments)
    if parsed.open_tokens:  # no closing timestamp: runs to the end of the window (clamped to the audio later)
        pieces.append((parsed.open_start, CHUNK_SECONDS, parsed.open_tokens))
    segments: list[Segment] = []
    for start, end, text_ids in pieces:
        text = decode_text(tokenizer, text_ids)
        if text:
            seg_start = time_offset + start
            segments.append(Segment(first_id + len(segments), seg_start, max(seg_start, time_offset + end), text,
                                    list(text_ids)))
    return segments


def transcribe_hf(
    model,
    processor,
    audio: np.ndarray,
    *,
    language: str | None = None,
    task: str = "transcribe",
    num_beams: int = 1,
    source: str | None = None,
    temperature_fallback: bool = True,
    temperature: float | tuple[float, ...] | None = None,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    vad: bool = False,
    vad_parameters: dict | None = None,
    word_timestamps: bool = False,
) -> Transcription:
    """Transcribe (or translate) one audio array of any length; see the module docstring.

    ``temperature_fallback=False``: audio over 30 s is decoded at temperature 0 only (deterministic).
    ``temperature``: the schedule (a tuple) or one temperature; None: 0, then the fallback schedule
    per ``temperature_fallback``. A clip of at most 30 s is decoded at the first temperature only.
    ``initial_prompt``: text given as the previous window's; ``hotwords`` are folded into it (after
    the prompt, where faster-whisper puts them). ``vad``: only the speech (Silero VAD,
    ``vad_parameters`` as faster-whisper's ``VadOptions``) is decoded, times mapped back to the file."""
    import torch

    if word_timestamps:
        raise WhisperFtError("word timestamps need the CTranslate2 backend: use `whisper-ft infer-ct2 "
                             "--word_timestamps` (or drop --word_timestamps)")
    if vad:
        return _transcribe_speech_only(
            model, processor, audio, vad_parameters, language=language, task=task, num_beams=num_beams,
            source=source, temperature_fallback=temperature_fallback, temperature=temperature,
            initial_prompt=initial_prompt, hotwords=hotwords)
    prompt = " ".join(p.strip() for p in (initial_prompt, hotwords) if p and p.strip()) or None
    if temperature is None:
        temps = LONG_FORM_OPTIONS["temperature"] if temperature_fallback else (0.0,)
    else:
        temps = tuple(temperature) if isinstance(temperature, (tuple, list)) else (float(temperature),)
    task = validate_task(task)
    language = normalize_language(language)
    if num_beams < 1:
        raise WhisperFtError(f"num_beams must be at least 1 (got {num_beams})")
    fe = processor.feature_extractor
    duration = len(audio) / SAMPLE_RATE
    first = fe(audio[:N_SAMPLES], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    probability = None
    if language is None:
        language, probability = detect_language_hf(model, processor, first)[0]
    if len(audio) <= N_SAMPLES:
        tokens = generate_token_ids(model, processor, first, language=language, task=task, num_beams=num_beams,
                                    return_timestamps=True, prompt=prompt, temperature=temps[0])[0]
        segments = segments_from_tokens(tokens, processor.tokenizer)
    else:
        inputs = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False, padding="longest",
                    return_attention_mask=True)
        inner = unwrap_model(model)
        p = _param(model)
        with torch.inference_mode():
            out = inner.generate(
                input_features=inputs.input_features.to(device=p.device, dtype=p.dtype),
                attention_mask=inputs.attention_mask.to(p.device),
                language=language,
                task=task,
                num_beams=num_beams,
                return_timestamps=True,
                return_segments=True,
                **{**LONG_FORM_OPTIONS, "temperature": temps if len(temps) > 1 else temps[0]},
                **generation_prompt_kwargs(processor.tokenizer, prompt),
            )
        segments = []
        for seg in out["segments"][0]:
            tokens = [int(t) for t in seg["tokens"]]
            offset = float(seg["start"]) - _first_timestamp(tokens, processor.tokenizer)
            segments += segments_from_tokens(tokens, processor.tokenizer, time_offset=offset,
                                             first_id=len(segments))
    for seg in segments:
        seg.end = min(seg.end, duration)
        seg.start = min(seg.start, seg.end)
    return Transcription(language=language, duration=duration, segments=segments,
                         language_probability=probability, source=source)


def _first_timestamp(tokens: list[int], tokenizer) -> float:
    from whisper_ft.models.vocabulary import vocabulary_of

    vocab = vocabulary_of(tokenizer)
    return next((vocab.seconds(t) for t in tokens if vocab.is_timestamp(t)), 0.0)


def _transcribe_speech_only(model, processor, audio, vad_parameters, *, source=None, **kwargs) -> Transcription:
    """:func:`transcribe_hf` of the speech only (faster-whisper's VAD path: speech chunks glued
    together, decoded, segment times mapped back to the file and clipped to the speech)."""
    from faster_whisper.transcribe import restore_speech_timestamps
    from faster_whisper.vad import collect_chunks

    from whisper_ft.decoding.speech import chunk_seconds, clip_to_speech, speech_chunks

    duration = len(audio) / SAMPLE_RATE
    chunks = speech_chunks(audio, vad_parameters)
    if not chunks:
        return Transcription(language=normalize_language(kwargs.get("language")), duration=duration, segments=[],
                             source=source)
    pieces, _ = collect_chunks(audio, chunks)
    t = transcribe_hf(model, processor, np.concatenate(pieces), source=source, **kwargs)
    speech = chunk_seconds(chunks)
    segments = [clip_to_speech(seg, speech) for seg in restore_speech_timestamps(t.segments, chunks, SAMPLE_RATE)]
    for i, seg in enumerate(segments):
        seg.id = i
        seg.end = min(seg.end, duration)
        seg.start = min(seg.start, seg.end)
    return Transcription(language=t.language, duration=duration, segments=segments,
                         language_probability=t.language_probability, source=source)

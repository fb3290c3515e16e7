"""faster-whisper's ``transcribe`` on one audio of any length (optional VAD, word timestamps,
batched pipeline) -> a typed :class:`~whisper_ft.decoding.results.Transcription`.

A clip of at most 30 s decoded plainly (sequential, no VAD, no word timestamps, no hotwords) goes
through the server's short-clip decoding instead (:func:`whisper_ft.decoding.batched.transcribe_clips_ct2`:
one CTranslate2 ``generate`` on the 30 s window padded with silence, as transformers and ``eval``
build it), with faster-whisper's temperature fallback when that decode looks like a loop: the same
clip and options give the same text from ``infer-ct2``, ``eval --backend ct2`` and ``serve``.
(faster-whisper's own ``transcribe`` pads the features differently and so can word a short clip
differently.)"""

from __future__ import annotations

import numpy as np

from whisper_ft.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_ft.decoding.ct2_loading import CT2Whisper, model_suppress_tokens
from whisper_ft.decoding.hf import validate_task
from whisper_ft.decoding.results import Segment, Transcription, Word
from whisper_ft.errors import WhisperFtError


def transcribe_ct2(
    ct2: CT2Whisper,
    audio: np.ndarray,
    *,
    language: str | None = None,
    task: str = "transcribe",
    beam_size: int = 5,
    vad: bool = False,
    word_timestamps: bool = False,
    batch_size: int = 1,
    temperature: float | list[float] | None = None,
    max_new_tokens: int | None = None,
    no_speech_threshold: float | None = 0.6,
    without_timestamps: bool | None = None,
    initial_prompt: str | None = None,
    condition_on_previous_text: bool = True,
    hotwords: str | None = None,
    vad_parameters: dict | None = None,
    source: str | None = None,
    on_segment=None,
) -> Transcription:
    """Transcribe (or translate) one audio array of any length with faster-whisper.

    ``batch_size > 1`` uses faster-whisper's batched pipeline (chunks cut by VAD). ``temperature``
    None means faster-whisper's fallback schedule (0.0, 0.2, ... 1.0). ``vad``: only the speech
    is decoded, and segment times are clipped to it (see :mod:`whisper_ft.decoding.speech`).
    ``on_segment(segment)`` is called for each segment as soon as it is decoded (progress).
    ``without_timestamps`` None: each pipeline's own default -- sequential decoding predicts
    timestamps (segments of a few seconds), the batched pipeline does not (its segments are the
    VAD chunks of up to 30 s; that is part of why it is faster: measured 20 % on a 10 min file).
    ``hotwords``: faster-whisper's hotwords (words to favour, given as a prompt prefix).
    ``vad_parameters``: faster-whisper's ``VadOptions`` fields (threshold, min_silence_duration_ms, ...).
    """
    from whisper_ft.models.languages import normalize_language

    language = normalize_language(language)
    task = validate_task(task)
    if beam_size < 1:
        raise WhisperFtError(f"beam_size must be at least 1 (got {beam_size})")
    kwargs = dict(
        language=language,
        task=task,
        beam_size=beam_size,
        word_timestamps=word_timestamps,
        vad_filter=vad,
        suppress_tokens=model_suppress_tokens(ct2.path),
        no_speech_threshold=no_speech_threshold,
        max_new_tokens=max_new_tokens,
        without_timestamps=without_timestamps,
        initial_prompt=initial_prompt,
        condition_on_previous_text=condition_on_previous_text,
    )
    if temperature is not None:
        kwargs["temperature"] = temperature
    if hotwords:
        kwargs["hotwords"] = hotwords
    if vad_parameters:
        kwargs["vad_parameters"] = dict(vad_parameters)
    speech = None
    duration = len(audio) / SAMPLE_RATE
    if (batch_size == 1 and not vad and not word_timestamps and not hotwords and not without_timestamps
            and no_speech_threshold == 0.6 and duration <= CHUNK_SECONDS):
        short = _short_clip(ct2, audio, language=language, task=task, beam_size=beam_size, temperature=temperature,
                            initial_prompt=initial_prompt, max_new_tokens=max_new_tokens)
        if short is not None:
            for seg in short.segments:
                if on_segment is not None:
                    on_segment(seg)
            return Transcription(language=short.language, duration=duration, segments=short.segments,
                                 language_probability=short.language_probability, source=source)
    if without_timestamps is None:
        kwargs["without_timestamps"] = batch_size > 1
    if batch_size > 1:
        from faster_whisper import BatchedInferencePipeline

        kwargs["vad_filter"] = True  # the batched pipeline cuts the audio into chunks with VAD
        segments, info = BatchedInferencePipeline(model=ct2.model).transcribe(audio, batch_size=batch_size, **kwargs)
    elif vad:
        # faster-whisper's own VAD path (speech chunks glued together, times mapped back), done
        # here so that the chunks are known and segment times can be clipped to them
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import collect_chunks

        from whisper_ft.decoding.speech import chunk_seconds, speech_chunks

        chunks = speech_chunks(audio, vad_parameters)
        pieces, _ = collect_chunks(audio, chunks)
        kwargs["vad_filter"] = False
        segments, info = ct2.model.transcribe(np.concatenate(pieces), **kwargs)
        if chunks:
            segments = restore_speech_timestamps(segments, chunks, SAMPLE_RATE)
        speech = chunk_seconds(chunks)
    else:
        segments, info = ct2.model.transcribe(audio, **kwargs)
    out = []
    for i, s in enumerate(segments):
        words = None
        if s.words is not None:
            words = [Word(w.start, w.end, w.word, w.probability) for w in s.words]
        end = min(float(s.end), duration)
        seg = Segment(i, min(float(s.start), end), end, s.text.strip(), list(s.tokens),
                      s.avg_logprob, s.no_speech_prob, words)
        if speech:
            from whisper_ft.decoding.speech import clip_to_speech

            seg = clip_to_speech(seg, speech)
        out.append(seg)
        if on_segment is not None:
            on_segment(seg)
    return Transcription(language=info.language, duration=duration, segments=out,
                         language_probability=info.language_probability, source=source)


def _short_clip(ct2: CT2Whisper, audio: np.ndarray, *, language, task, beam_size, temperature, initial_prompt,
                max_new_tokens) -> Transcription | None:
    """The server's decoding of one short clip at the first temperature of the schedule; None when
    it looks like a loop or a failed decode and the schedule has more temperatures (the caller then
    decodes with faster-whisper's fallback, as the server does)."""
    from whisper_ft.decoding.batched import FALLBACK_TEMPERATURES, Clip, transcribe_clips_ct2

    if temperature is None:
        temperature = FALLBACK_TEMPERATURES
    temps = [float(t) for t in temperature] if isinstance(temperature, (list, tuple)) else [float(temperature)]
    clip = Clip(np.asarray(audio, dtype=np.float32), language, task, initial_prompt, temps[0])
    result = transcribe_clips_ct2(ct2, [clip], beam_size=beam_size, max_new_tokens=max_new_tokens)[0]
    if result.needs_fallback and len(temps) > 1:
        return None
    return result.transcription

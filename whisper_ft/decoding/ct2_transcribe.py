"""faster-whisper's ``transcribe`` on one audio of any length (optional VAD, word timestamps,
batched pipeline) -> a typed :class:`~whisper_ft.core.results.Transcription`.

A clip of at most 30 s decoded plainly (sequential, no VAD, no word timestamps, no hotwords) goes
through the server's short-clip decoding instead (:func:`whisper_ft.decoding.batched.transcribe_clips_ct2`:
one CTranslate2 ``generate`` on the 30 s window padded with silence, as transformers and ``eval``
build it), with faster-whisper's temperature fallback when that decode looks like a loop: the same
clip and options give the same text from ``infer-ct2``, ``eval --backend ct2`` and ``serve``.
(faster-whisper's own ``transcribe`` pads the features differently and so can word a short clip
differently.)"""

from __future__ import annotations

import numpy as np

from whisper_ft.core.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Transcription, Word
from whisper_ft.decoding.ct2_loading import CT2Whisper, model_suppress_tokens
from whisper_ft.decoding.hf import validate_task
from whisper_ft.models.generation import MAX_TARGET_TOKENS


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
    from whisper_ft.core.languages import normalize_language

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
    used = 0  # prompt tokens
    if initial_prompt and initial_prompt.strip():  # Whisper's limit, said when a longer prompt is cut
        from whisper_ft.decoding.batched import MAX_PROMPT_TOKENS, _tokenizer, prompt_tokens

        kept = prompt_tokens(_tokenizer(ct2, language, task), initial_prompt)
        used = len(kept)
        if batch_size == 1 and used == MAX_PROMPT_TOKENS:  # (possibly) cut: hand over the tokens kept;
            kwargs["initial_prompt"] = kept  # the batched pipeline keeps a text prompt's end itself
    if hotwords and hotwords.strip():  # they share the prompt's room
        from whisper_ft.decoding.batched import _tokenizer

        used = min(MAX_TARGET_TOKENS // 2 - 1, used + len(_tokenizer(ct2, language, task).encode(" " + hotwords.strip())))
    if max_new_tokens is not None:  # the prompt and the new tokens must fit Whisper's 448 together
        kwargs["max_new_tokens"] = max(1, min(max_new_tokens, MAX_TARGET_TOKENS - 6 - used))
    if vad and batch_size == 1:
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
        pieces = [(0.0, segments)]
    else:
        if batch_size > 1:
            kwargs["vad_filter"] = True  # the batched pipeline cuts the audio into chunks with VAD
        pieces, info = _decode_in_pieces(ct2, audio, kwargs, batch_size)
    from whisper_ft.decoding.batched import VerboseSegment

    out = []
    for offset, segments in pieces:
        for s in segments:
            words = None
            if s.words is not None:
                words = [Word(w.start + offset, w.end + offset, w.word, w.probability) for w in s.words]
            end = min(float(s.end) + offset, duration)
            seg = VerboseSegment(len(out), min(float(s.start) + offset, end), end, s.text.strip(), list(s.tokens),
                                 s.avg_logprob, s.no_speech_prob, words, seek=int(s.seek) + int(round(offset * 100)),
                                 temperature=float(s.temperature or 0.0), compression_ratio=float(s.compression_ratio))
            if speech:
                from whisper_ft.decoding.speech import clip_to_speech

                seg = clip_to_speech(seg, speech)
            out.append(seg)
            if on_segment is not None:
                on_segment(seg)  # progress; a caller that must stop (its client left) raises here
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


PIECE_SECONDS = 300  # faster-whisper computes the features (and VAD) of all it is given at once: 1.7 GB for 30 min
_QUIET_SEARCH_SECONDS = 20  # a piece ends at the quietest 100 ms in its last seconds, not mid-word


def _quietest(audio: np.ndarray, end: int) -> int:
    """The start of the quietest 100 ms frame in the ``_QUIET_SEARCH_SECONDS`` before ``end``."""
    frame = SAMPLE_RATE // 10
    lo = max(0, end - _QUIET_SEARCH_SECONDS * SAMPLE_RATE)
    n = (end - lo) // frame
    if n < 2:
        return end
    energy = np.square(audio[lo:lo + n * frame].reshape(n, frame)).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame


def piece_cuts(audio: np.ndarray, piece_seconds: float | None = None) -> list[tuple[int, int]]:
    """Sample ranges of at most ``piece_seconds`` (:data:`PIECE_SECONDS`) covering ``audio``, each
    cut at a quiet moment."""
    step, cuts, start = int((piece_seconds or PIECE_SECONDS) * SAMPLE_RATE), [], 0
    while len(audio) - start > step:
        cut = _quietest(audio, start + step)
        cut = cut if cut > start else start + step
        cuts.append((start, cut))
        start = cut
    cuts.append((start, len(audio)))
    return cuts


def _decode_in_pieces(ct2: CT2Whisper, audio: np.ndarray, kwargs: dict, batch_size: int):
    """faster-whisper's long-form decode (sequential, or the VAD + batched pipeline), at most
    :data:`PIECE_SECONDS` at a time so memory stays bounded for hours of audio. Sequentially each
    piece is conditioned on the previous one's text, as the whole file would be, and the language
    is detected once. Returns ``[(offset seconds, segments), ...]`` (lazy) and the first piece's info."""
    if batch_size > 1:
        from faster_whisper import BatchedInferencePipeline

        pipeline = BatchedInferencePipeline(model=ct2.model)
        transcribe = lambda piece, **kw: pipeline.transcribe(piece, batch_size=batch_size, **kw)  # noqa: E731
    else:
        transcribe = ct2.model.transcribe
    cuts = piece_cuts(audio)
    first_segments, first = transcribe(audio[cuts[0][0]:cuts[0][1]], **kwargs)
    eot = ct2.model.hf_tokenizer.token_to_id("<|endoftext|>")

    def later(begin: int, end: int, previous: list):
        options = dict(kwargs, language=first.language)
        if batch_size == 1 and kwargs.get("condition_on_previous_text", True):
            tail = [t for s in previous[-8:] for t in s.tokens if t < eot]
            options["initial_prompt"] = tail[-(MAX_TARGET_TOKENS // 2 - 1):] or kwargs.get("initial_prompt")
        return transcribe(audio[begin:end], **options)[0]

    def pieces():
        previous: list = []

        def remember(segments):
            for s in segments:
                previous.append(s)
                yield s

        yield cuts[0][0] / SAMPLE_RATE, remember(first_segments)
        for begin, end in cuts[1:]:
            yield begin / SAMPLE_RATE, remember(later(begin, end, previous))

    return pieces(), first

"""Generation with a transformers Whisper (plain, or a peft model wrapping one).

Real generation: the decoder starts from the prompt tokens only (``<|startoftranscript|>``, the
language, the task, ``<|notimestamps|>``), never from reference tokens. Samples with different
languages are decoded in per-language groups (``None`` = let the model detect the language).
"""

from __future__ import annotations

from collections.abc import Sequence

from whisper_ft.core.audio import N_SAMPLES
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.languages import normalize_language
from whisper_ft.models.generation import TASKS, language_token_ids, special_token_ids
from whisper_ft.models.vocabulary import vocabulary_of

N_FRAMES = N_SAMPLES // 160  # log-mel frames in one 30 s window


def unwrap_model(model):
    """The ``WhisperForConditionalGeneration`` inside a peft model (LoRA layers stay injected and
    active); a plain model is returned as is."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def validate_task(task: str) -> str:
    t = (task or "").strip().lower()
    if t not in TASKS:
        raise WhisperFtError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return t


def per_sample_languages(language: str | Sequence[str | None] | None, batch_size: int) -> list[str | None]:
    """One normalised language code (or None) per sample; raises on an unknown language."""
    if language is None or isinstance(language, str):
        return [normalize_language(language)] * batch_size
    langs = [normalize_language(x) for x in language]
    if len(langs) != batch_size:
        raise WhisperFtError(f"{len(langs)} languages for a batch of {batch_size}: give one per sample, or one for all")
    return langs


def text_token_ids(ids, eot_id: int) -> list[int]:
    """Drop special and timestamp tokens (every id from ``<|endoftext|>`` on, in Whisper's vocabulary)."""
    return [int(t) for t in ids if 0 <= int(t) < eot_id]


def decode_text(tokenizer, ids) -> str:
    """The transcript of a token sequence (special/timestamp tokens dropped), stripped."""
    return tokenizer.decode(vocabulary_of(tokenizer).text_tokens(ids), skip_special_tokens=True).strip()


def generated_ids(ids: list[int], specials: dict[str, int], prompt_ids: frozenset[int]) -> list[int]:
    """The generated tokens of an output row: a leading prompt (a text prompt ``<|startofprev|> ...``,
    ``<|startoftranscript|>``, then language and task tokens, then ``<|notimestamps|>``) and everything from the first
    ``<|endoftext|>`` on removed. Timestamp tokens are kept."""
    start = 0
    if ids and ids[0] == specials["sot_prev"] and specials["sot"] in ids:  # a text prompt came first
        start = ids.index(specials["sot"])
    if start < len(ids) and ids[start] == specials["sot"]:
        first = start
        start += 1
        while start < len(ids) and start < first + 3 and ids[start] in prompt_ids:
            start += 1
        if start < len(ids) and ids[start] == specials["no_timestamps"]:
            start += 1
    out = []
    for t in ids[start:]:
        if t == specials["eot"]:
            break
        out.append(int(t))
    return out


def _prompt_ids(tokenizer, specials: dict[str, int]) -> frozenset[int]:
    """Language and task token ids (what may follow ``<|startoftranscript|>`` in a prompt)."""
    return frozenset(language_token_ids(tokenizer).values()) | {specials["transcribe"], specials["translate"]}


def generation_prompt_kwargs(tokenizer, prompt: str | None, temperature: float = 0.0) -> dict:
    """``generate`` arguments for a text prompt (``prompt_ids``, as Whisper's initial prompt) and a
    sampling temperature (0: greedy or beam search)."""
    kwargs: dict = {}
    if prompt and prompt.strip():
        import torch

        kwargs["prompt_ids"] = torch.tensor(tokenizer.get_prompt_ids(prompt.strip()))
    if temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature))
    return kwargs


def _generate_group(model, features, attention_mask, *, language, task, num_beams, max_new_tokens,
                    return_timestamps, specials, prompt_ids, extra=None) -> list[list[int]]:
    import torch

    kwargs = {"num_beams": num_beams, "return_timestamps": return_timestamps, **(extra or {})}
    if getattr(model.generation_config, "is_multilingual", True):
        kwargs["task"] = task
        if language is not None:
            kwargs["language"] = language
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if features.shape[-1] <= N_FRAMES:
        # One window: exactly one generate call (transformers would otherwise seek again after a
        # stray timestamp token, even without timestamps).
        kwargs["force_unique_generate_call"] = True
    with torch.inference_mode():
        out = model.generate(input_features=features, **kwargs)
    sequences = out["sequences"] if isinstance(out, dict) else getattr(out, "sequences", out)
    return [generated_ids(row.tolist(), specials, prompt_ids) for row in sequences]


def generate_token_ids(
    model,
    processor,
    input_features,
    *,
    language: str | list[str] | None = None,
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    return_timestamps: bool = False,
    attention_mask=None,
    prompt: str | None = None,
    temperature: float = 0.0,
) -> list[list[int]]:
    """Generated token ids per sample: no prompt, no ``<|endoftext|>`` or padding; timestamp
    tokens included when ``return_timestamps``. ``prompt``: text given to the decoder as the
    previous window's (Whisper's initial prompt); ``temperature`` > 0 samples."""
    task = validate_task(task)
    if num_beams < 1:
        raise WhisperFtError(f"num_beams must be at least 1 (got {num_beams})")
    inner = unwrap_model(model)
    param = next(inner.parameters())
    features = input_features.to(device=param.device, dtype=param.dtype)
    n = features.shape[0]
    langs = per_sample_languages(language, n)
    specials = special_token_ids(processor.tokenizer)
    prompt_ids = _prompt_ids(processor.tokenizer, specials)
    results: list[list[int] | None] = [None] * n
    for lang in dict.fromkeys(langs):  # groups in first-seen order
        idx = [i for i, x in enumerate(langs) if x == lang]
        mask = None if attention_mask is None else attention_mask[idx].to(param.device)
        group = _generate_group(
            inner,
            features[idx],
            mask,
            language=lang,
            task=task,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            return_timestamps=return_timestamps,
            specials=specials,
            prompt_ids=prompt_ids,
            extra=generation_prompt_kwargs(processor.tokenizer, prompt, temperature),
        )
        for i, ids in zip(idx, group):
            results[i] = ids
    return results  # type: ignore[return-value]


def generate_texts(
    model,
    processor,
    input_features,
    *,
    language: str | list[str] | None = None,
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    return_timestamps: bool = False,
    prompt: str | None = None,
) -> list[str]:
    """Transcribe (or translate) a batch of log-mel features ``[batch, n_mels, 3000]``; one text per
    sample. ``language`` is one code for all, one per sample, or None (detected); ``prompt``: text
    every sample is conditioned on as the previous text."""
    ids = generate_token_ids(
        model,
        processor,
        input_features,
        language=language,
        task=task,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        return_timestamps=return_timestamps,
        prompt=prompt,
    )
    return [decode_text(processor.tokenizer, seq) for seq in ids]


# --- packing: the ct2 fast path's strategy with transformers -----------------------------------
#
# Same-language clips share 30 s windows (whisper_ft.decoding.packing), each window is decoded with a
# timestamped prompt through generate and split back with the same splitter as the CTranslate2
# path; clips alone in a window, clips without a given language and clips whose share is refused
# are decoded one window each (the plain path above).


def timestamp_begin_hf(model, tokenizer) -> int | None:
    """The id of ``<|0.00|>`` when the model can produce timestamps (a generation config with
    ``no_timestamps_token_id``, the timestamp tokens right after it, inside the model's
    vocabulary), else None."""
    inner = unwrap_model(model)
    no_ts = getattr(inner.generation_config, "no_timestamps_token_id", None)
    vocab = vocabulary_of(tokenizer)
    if no_ts is None or not vocab.has_timestamps or vocab.no_timestamps != no_ts:
        return None
    if int(getattr(inner.config, "vocab_size", 0) or 0) <= no_ts + 1:
        return None
    return no_ts + 1


def generate_packed_token_ids(
    model,
    processor,
    audios,
    *,
    language: str | list[str | None] | None,
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    stats: dict | None = None,
) -> list[list[int]]:
    """Generated text tokens per audio (16 kHz arrays of at most 30 s), short clips decoded in
    shared windows (see the comment above). ``stats`` receives the counts the CTranslate2 path
    gives (``windows``, ``packed_clips``, ``refused_clips``, ``unpacked_clips``). A model without
    timestamps raises WhisperFtError (check :func:`timestamp_begin_hf` first)."""
    from whisper_ft.core.audio import SAMPLE_RATE
    from whisper_ft.decoding.packing import (
        PACK_GAP_SECONDS,
        add_packing_stats,
        packed_audio,
        plan_given_language_windows,
        take_packed_results,
    )
    from whisper_ft.models.generation import MAX_TARGET_TOKENS

    task = validate_task(task)
    langs = per_sample_languages(language, len(audios))
    timestamp_begin = timestamp_begin_hf(model, processor.tokenizer)
    if timestamp_begin is None:
        raise WhisperFtError("this model has no timestamp tokens: it cannot be packed (decode without packing)")
    fe = processor.feature_extractor
    windows = plan_given_language_windows([len(a) / SAMPLE_RATE for a in audios], langs)
    packed = [w for w in windows if len(w.indices) > 1]
    later = [i for i, lang in enumerate(langs) if lang is None] + [w.indices[0] for w in windows if len(w.indices) == 1]
    results: list[list[int] | None] = [None] * len(audios)
    refused: list[int] = []
    if packed:
        window_audio = [packed_audio(audios, w, PACK_GAP_SECONDS) for w in packed]
        feats = fe(window_audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        seqs = generate_token_ids(model, processor, feats, language=[w.language for w in packed], task=task,
                                  num_beams=num_beams, return_timestamps=True)
        eot = vocabulary_of(processor.tokenizer).eot
        limit = MAX_TARGET_TOKENS - 4 - 1  # generate's cap (prompt included), less slack
        take_packed_results(packed, seqs, results, refused, eot=eot, timestamp_begin=timestamp_begin, limit=limit,
                            max_new_tokens=max_new_tokens)
    later = sorted(later + refused)
    if later:
        feats = fe([audios[i] for i in later], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        for i, toks in zip(later, generate_token_ids(model, processor, feats, language=[langs[i] for i in later],
                                                     task=task, num_beams=num_beams, max_new_tokens=max_new_tokens)):
            results[i] = toks
    add_packing_stats(stats, len(audios), packed, len(refused))
    return results  # type: ignore[return-value]

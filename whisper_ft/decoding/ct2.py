"""CTranslate2 / faster-whisper decoding: the batched 30 s window decoders and the fast path.

- :func:`load_ct2_whisper` (:mod:`whisper_ft.decoding.ct2_loading`) opens any model whisper-ft can name as a faster-whisper model
  (a CTranslate2 folder as is; a transformers folder, adapter or hub id converted once into the
  cache), on an automatically chosen device and compute type (CUDA float16, else CPU int8).
- :func:`transcribe_ct2` (:mod:`whisper_ft.decoding.ct2_transcribe`) runs faster-whisper on one audio (any length; optional VAD, word
  timestamps, batched pipeline) and returns a typed :class:`Transcription`.
- :func:`generate_token_ids_ct2` / :func:`generate_texts_ct2` (here) decode 30 s windows in batches with
  the CTranslate2 engine directly, with exactly the prompt the transformers path uses
  (``<|startoftranscript|><|lang|><|task|><|notimestamps|>``): the like-for-like comparison used
  by ``eval --backend ct2`` and ``convert --verify``. With ``pack=True`` they are the fast path
  for many short clips: same-language clips share 30 s windows (timestamps split them back, with
  a fallback to their own windows; a model without timestamp tokens is decoded unpacked, said once
  on stderr), and with ``load_ct2_whisper(..., inter_threads=N)`` a batch is decoded by N workers
  side by side. ``benchmarks/inference.py`` measures both against
  transformers and plain faster-whisper.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.decoding.ct2_loading import CT2Whisper, ct2_features, detect_languages_ct2
from whisper_ft.decoding.hf import per_sample_languages, validate_task
from whisper_ft.decoding.packing import (
    PACK_GAP_SECONDS,
    PACK_WINDOW_SECONDS,
    add_packing_stats,
    packed_audio,
    plan_given_language_windows,
    take_packed_results,
)
from whisper_ft.models.generation import MAX_TARGET_TOKENS, ct2_max_length

AUTO_BATCH_FROM_SECONDS = 300.0  # infer-ct2: recordings from 5 min on use the batched VAD pipeline ...
AUTO_BATCH_SIZE = 8  # ... with this many 30 s chunks per batch (measured: benchmarks/inference.py --long)


def default_batch_size(seconds: float) -> int:
    """``infer-ct2``'s batch size when ``--batch_size`` is not given: faster-whisper's batched
    pipeline (VAD-cut chunks, ``AUTO_BATCH_SIZE`` at a time) for recordings of
    ``AUTO_BATCH_FROM_SECONDS`` or more, where it is several times faster than sequential decoding
    at no worse error rate; 1 (sequential, each window conditioned on the previous text) below."""
    return AUTO_BATCH_SIZE if seconds >= AUTO_BATCH_FROM_SECONDS else 1


def _vocabulary_size(path: Path) -> int | None:
    """Entries in the CTranslate2 folder's vocabulary (the model's output size), if it says."""
    for name in ("vocabulary.json", "vocabulary.txt"):
        f = Path(path) / name
        try:
            if name.endswith(".json"):
                return len(json.loads(f.read_text(encoding="utf-8")))
            return sum(1 for _ in f.open(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, TypeError):
            continue
    return None


def timestamp_begin_ct2(ct2: CT2Whisper) -> int | None:
    """The id of ``<|0.00|>`` when the model can produce timestamps (``<|notimestamps|>`` followed
    by the timestamp tokens, inside the model's vocabulary), else None: packing needs them."""
    vocab = ct2.vocabulary
    if not vocab.has_timestamps:
        return None
    size = _vocabulary_size(ct2.path)
    if size is not None and size <= vocab.timestamp_begin:
        return None
    return vocab.timestamp_begin


def can_pack_ct2(ct2: CT2Whisper) -> bool:
    """Whether the packed fast path works with this model (it needs timestamps)."""
    return timestamp_begin_ct2(ct2) is not None


NO_TIMESTAMPS_MESSAGE = ("{model} has no timestamp tokens: packing is off, every clip is decoded in a 30 s window "
                         "of its own (slower on many short clips)")


_TOLD_NO_TIMESTAMPS: set[str] = set()


def _prompt(ct2: CT2Whisper, language: str | None, task: str, *, timestamps: bool = False,
            text: list[int] | tuple[int, ...] = ()) -> list[int]:
    """``<|startoftranscript|><|lang|><|task|>`` (+ ``<|notimestamps|>``), as transformers builds it;
    with ``text`` (a text prompt's tokens) ``<|startofprev|> text`` before it, as Whisper's prompt."""
    prompt = ct2.vocabulary.prompt(language, task, timestamps, multilingual=ct2.is_multilingual)
    return [ct2.vocabulary.sot_prev, *text, *prompt] if text else prompt


def text_prompt_ids(ct2: CT2Whisper, prompt: str | None) -> tuple[int, ...]:
    """A text prompt's tokens (the last 223, as Whisper keeps them); empty for no prompt."""
    from whisper_ft.decoding.batched import _tokenizer, prompt_tokens

    # the language only changes special tokens, not how text encodes
    return tuple(prompt_tokens(_tokenizer(ct2, "en", "transcribe"), prompt)) if prompt else ()


def _generate(ct2: CT2Whisper, groups: list[tuple[np.ndarray, list[list[int]]]], **kwargs) -> list[list]:
    """``engine.generate`` on batches of (features, prompts); one list of results per batch.

    CTranslate2 wants prompts of one length in a batch, hence several batches. With several
    workers (``inter_threads``) each batch is dealt out to them (items k, k + workers, ...: similar
    lengths when sorted) and every part is queued at once, so the workers decode side by side."""
    import ctranslate2

    workers = max(1, int(getattr(ct2.engine, "num_workers", 1) or 1))
    if workers == 1:
        return [ct2.engine.generate(ctranslate2.StorageView.from_array(features), prompts, **kwargs)
                for features, prompts in groups]
    queued = []
    for g, (features, prompts) in enumerate(groups):
        n = len(prompts)
        for k in range(min(workers, n)):
            idx = list(range(k, n, workers))
            part = ct2.engine.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[idx])),
                                       [prompts[i] for i in idx], asynchronous=True, **kwargs)
            queued.append((g, idx, part))
    results: list[list] = [[None] * len(prompts) for _, prompts in groups]
    for g, idx, part in queued:
        for i, r in zip(idx, part):
            results[g][i] = r.result()
    return results


def _max_length(max_new_tokens: int | None, prompts: list[list[int]]) -> int:
    # 448 -> at most 224 new tokens, the default of OpenAI and faster-whisper (ct2_max_length)
    if max_new_tokens is None:
        return MAX_TARGET_TOKENS
    longest = max(len(p) for p in prompts)
    return ct2_max_length(min(max_new_tokens, MAX_TARGET_TOKENS - longest), longest)


def generate_token_ids_ct2(
    ct2: CT2Whisper,
    audios: list[np.ndarray],
    *,
    language: str | list[str] | None = None,
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    pack: bool = False,
    stats: dict | None = None,
    prompt: str | tuple[int, ...] | None = None,
) -> list[list[int]]:
    """Generated tokens (no prompt, no ``<|endoftext|>``) for each audio's first 30 s.

    All audios go through the engine in one batch (encoder and decoder). ``pack=True`` is the fast
    path for short clips: clips of the same (given) language share 30 s windows (see
    :func:`generate_packed_token_ids_ct2`, which fills ``stats``); without it every clip gets a
    window of its own, decoded exactly like transformers decodes it. A model that cannot produce
    timestamps (:func:`can_pack_ct2`) is decoded unpacked even with ``pack=True`` (said once on
    stderr; ``stats["no_timestamps"]``). ``prompt``: a text (or its tokens) every clip is
    conditioned on as the previous text (``--prompt``/``--hotwords``), packed windows included.
    """
    import ctranslate2

    text = prompt if isinstance(prompt, tuple) else text_prompt_ids(ct2, prompt)
    task = validate_task(task)
    if num_beams < 1:
        raise WhisperFtError(f"num_beams must be at least 1 (got {num_beams})")
    langs = per_sample_languages(language, len(audios))
    if not audios:
        return []
    if pack and not can_pack_ct2(ct2):
        if str(ct2.path) not in _TOLD_NO_TIMESTAMPS:  # once per model, not once per batch
            _TOLD_NO_TIMESTAMPS.add(str(ct2.path))
            log(NO_TIMESTAMPS_MESSAGE.format(model=ct2.path))
        pack = False
        if stats is not None:
            stats["no_timestamps"] = True
    if pack:
        return generate_packed_token_ids_ct2(ct2, audios, language=langs, task=task, num_beams=num_beams,
                                             max_new_tokens=max_new_tokens, stats=stats, prompt=text)
    features = ct2_features(ct2, audios)
    if any(lang is None for lang in langs):
        if ct2.is_multilingual:
            detected = detect_languages_ct2(ct2, ctranslate2.StorageView.from_array(features))
            langs = [lang or det[0] for lang, det in zip(langs, detected)]
    prompts = [_prompt(ct2, lang, task, text=text) for lang in langs]
    (results,) = _generate(ct2, [(features, prompts)], return_scores=False, beam_size=num_beams,
                           suppress_blank=True, suppress_tokens=[-1], max_length=_max_length(max_new_tokens, prompts))
    return [list(r.sequences_ids[0]) for r in results]


# --- packing: several short clips in one 30 s window -----------------------------------------
#
# Encoding a 30 s window costs the same whether it holds 2 s or 29 s of speech, and on CPU the
# encoder is most of the work for short clips. Packing lays same-language clips one after another
# with PACK_GAP_SECONDS of silence between them, decodes the window with timestamps and splits the
# text back with whisper_ft.decoding.packing.split_packed_tokens (shared with the transformers path); a clip
# whose share is not clean is decoded again on its own (the unpacked path).


def generate_packed_token_ids_ct2(
    ct2: CT2Whisper,
    audios: list[np.ndarray],
    *,
    language: str | list[str | None] | None,
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    gap: float = PACK_GAP_SECONDS,
    window_seconds: float = PACK_WINDOW_SECONDS,
    stats: dict | None = None,
    prompt: tuple[int, ...] = (),
) -> list[list[int]]:
    """:func:`generate_token_ids_ct2` with packing: clips of the same language share windows
    (decoded together in one batch, with timestamps, split back by timestamp); a clip with a window
    to itself is decoded unpacked in the same batch; clips that do not split cleanly or have no
    language given are decoded unpacked in a second batch. ``stats`` (a dict) receives counts:
    ``windows``, ``packed_clips``, ``refused_clips`` (packed, then decoded again unpacked) and
    ``unpacked_clips`` (all clips decoded unpacked)."""
    task = validate_task(task)
    langs = per_sample_languages(language, len(audios))
    if not ct2.is_multilingual:  # English-only: no language token in the prompt, all clips pack together
        langs = [lang or "en" for lang in langs]
    windows = plan_given_language_windows([len(a) / SAMPLE_RATE for a in audios], langs, gap=gap,
                                          window_seconds=window_seconds)
    packed = [w for w in windows if len(w.indices) > 1]
    singles = [w.indices[0] for w in windows if len(w.indices) == 1]
    later = [i for i, lang in enumerate(langs) if lang is None]  # detected by the unpacked path
    if max_new_tokens is not None and num_beams > 1:
        # a shared batch caps every item at the windows' length; beam search would notice
        later, singles = later + singles, []
    results: list[list[int] | None] = [None] * len(audios)
    refused: list[int] = []
    if packed:
        # the packed windows (timestamped prompt) and the clips alone in a window (the unpacked
        # prompt, so their result is exactly the unpacked path's), queued together
        groups = [(ct2_features(ct2, [packed_audio(audios, w, gap) for w in packed]),
                   [_prompt(ct2, w.language, task, timestamps=True, text=prompt) for w in packed])]
        if singles:
            groups.append((ct2_features(ct2, [audios[i] for i in singles]),
                           [_prompt(ct2, langs[i], task, text=prompt) for i in singles]))
        out = _generate(ct2, groups, beam_size=num_beams, return_scores=False, suppress_blank=True,
                        suppress_tokens=[-1], max_length=MAX_TARGET_TOKENS)
        eot = ct2.vocabulary.eot
        timestamp_begin = timestamp_begin_ct2(ct2)
        if timestamp_begin is None:
            raise WhisperFtError(NO_TIMESTAMPS_MESSAGE.format(model=ct2.path).split(":")[0] + ": it cannot be packed")
        limit = MAX_TARGET_TOKENS // 2 - len(groups[0][1][0]) - 1  # CTranslate2's cap on new tokens, less slack
        take_packed_results(packed, [list(r.sequences_ids[0]) for r in out[0]], results, refused, eot=eot,
                            timestamp_begin=timestamp_begin, limit=limit, max_new_tokens=max_new_tokens)
        for i, r in zip(singles, out[1] if singles else []):
            seq = list(r.sequences_ids[0])
            results[i] = seq[:max_new_tokens] if max_new_tokens is not None else seq
    else:
        later += singles
    later = sorted(later + refused)
    if later:
        ids = generate_token_ids_ct2(ct2, [audios[i] for i in later], language=[langs[i] for i in later],
                                     task=task, num_beams=num_beams, max_new_tokens=max_new_tokens, prompt=prompt)
        for i, toks in zip(later, ids):
            results[i] = toks
    add_packing_stats(stats, len(audios), packed, len(refused))
    return results  # type: ignore[return-value]


def generate_texts_ct2(ct2: CT2Whisper, audios: list[np.ndarray], **kwargs) -> list[str]:
    """One transcript per audio (first 30 s), decoded like :func:`generate_token_ids_ct2`
    (``pack=True``: the packed fast path)."""
    vocab = ct2.vocabulary
    ids = generate_token_ids_ct2(ct2, audios, **kwargs)
    return [ct2.model.hf_tokenizer.decode(vocab.text_tokens(seq)).strip() for seq in ids]


def audio_seconds(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE

"""Whisper generation settings derived from a tokenizer (what HF keeps in generation_config.json)."""

from __future__ import annotations

from whisper_ft.core.languages import LANGUAGES

TASKS = ("transcribe", "translate")
MAX_TARGET_TOKENS = 448  # decoder positions in every Whisper model
TIMESTAMP_STEP = 0.02  # seconds per timestamp token
SPECIAL_TOKENS = {  # every Whisper vocabulary has these (models.vocabulary names them the same way)
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "sot_prev": "<|startofprev|>",
    "no_timestamps": "<|notimestamps|>",
}


def ct2_max_length(new_tokens: int, prompt_length: int) -> int:
    """CTranslate2 Whisper's ``max_length`` that lets ``new_tokens`` be generated after a prompt of
    ``prompt_length`` tokens. It stops at ``max_length // 2`` new tokens (OpenAI's sample_len =
    n_text_ctx // 2) and at ``max_length`` tokens counted from the prompt's first (a text prompt
    ``<|startofprev|> ...`` counts), whichever comes first (measured on CTranslate2 4.x:
    min(max_length // 2, max_length - prompt_length + 1))."""
    return min(MAX_TARGET_TOKENS, max(2 * new_tokens, new_tokens + prompt_length - 1))


def special_token_ids(tokenizer) -> dict[str, int]:
    """Ids of Whisper's special tokens (raises KeyError naming a missing one)."""
    vocab = tokenizer.get_vocab()
    out = {}
    for key, token in SPECIAL_TOKENS.items():
        if token not in vocab:
            raise KeyError(f"tokenizer has no {token} token: not a Whisper tokenizer")
        out[key] = vocab[token]
    out["timestamp_begin"] = out["no_timestamps"] + 1
    return out


def language_token_ids(tokenizer) -> dict[str, int]:
    """``{"<|en|>": id, ...}`` for every Whisper language the tokenizer has."""
    vocab = tokenizer.get_vocab()
    return {f"<|{code}|>": vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab}


def build_generation_config(
    tokenizer,
    *,
    suppress_tokens: list[int] | None = None,
    begin_suppress_tokens: list[int] | None = None,
    alignment_heads: list[list[int]] | None = None,
):
    """A ``GenerationConfig`` with everything ``WhisperForConditionalGeneration.generate`` needs
    for ``language=``/``task=``/``return_timestamps=`` to work offline."""
    from transformers import GenerationConfig

    ids = special_token_ids(tokenizer)
    lang_to_id = language_token_ids(tokenizer)
    if begin_suppress_tokens is None:
        space = tokenizer.convert_tokens_to_ids("Ġ")
        begin_suppress_tokens = [t for t in (space, ids["eot"]) if isinstance(t, int) and t >= 0]
    return GenerationConfig(
        alignment_heads=alignment_heads or [],
        begin_suppress_tokens=list(begin_suppress_tokens),
        suppress_tokens=list(suppress_tokens or []),
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        is_multilingual=len(lang_to_id) > 1,
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": ids["transcribe"], "translate": ids["translate"]},
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["sot_prev"],
        max_initial_timestamp_index=50,
        max_length=MAX_TARGET_TOKENS,
        return_timestamps=False,
    )


def allow_empty_transcript(generation_config, tokenizer) -> bool:
    """Let ``<|endoftext|>`` be the first token (an empty transcript); True when it changed.

    Whisper's decoders forbid it there by default (``begin_suppress_tokens`` here, read by
    transformers and, after conversion, by CTranslate2's ``suppress_blank``), which forces some
    text out of a model even on silence. A model trained with ``--empty_audio_ratio`` has learnt
    when saying nothing is right, so its saved generation config allows it.
    """
    eot = special_token_ids(tokenizer)["eot"]
    begin = list(getattr(generation_config, "begin_suppress_tokens", None) or [])
    if eot not in begin:
        return False
    generation_config.begin_suppress_tokens = [t for t in begin if t != eot]
    return True

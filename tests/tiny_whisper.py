"""A tiny random multilingual Whisper, built offline in about a second.

Used by the test-suite and for smoke runs: a byte-level tokenizer (256 byte tokens, no merges)
with the full set of Whisper special tokens in Whisper's order (languages, tasks, timestamps),
so every code path that handles prefixes, timestamps and languages works exactly as with a real
model; and a 2-layer, 64-dim model with the real 80-mel, 30 s input shape.
"""

from __future__ import annotations

from pathlib import Path

from whisper_ft.core.languages import LANGUAGES
from whisper_ft.models.generation import TIMESTAMP_STEP, build_generation_config

N_MELS = 80
N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel BPE uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def whisper_special_tokens(languages=None) -> list[str]:
    """Whisper's special tokens in vocabulary order (after the BPE tokens)."""
    langs = list(LANGUAGES if languages is None else languages)
    return (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in langs]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
        + [f"<|{i * TIMESTAMP_STEP:.2f}|>" for i in range(N_TIMESTAMPS)]
    )


def build_tiny_tokenizer(languages=None):
    """A ``WhisperTokenizer`` over raw bytes plus Whisper's special tokens."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: i for i, b in enumerate(sorted(byte_chars))}
    tok = WhisperTokenizer(vocab=vocab, merges=[])
    specials = whisper_special_tokens(languages)
    n_special = 2 + len(list(LANGUAGES if languages is None else languages)) + 6
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials[:n_special]], special_tokens=True
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in specials[n_special:]])
    return tok


def build_tiny_whisper(
    out_dir: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    ffn_dim: int = 128,
    seed: int = 0,
    languages=None,
) -> Path:
    """Write a tiny random Whisper (model, processor, generation config) to ``out_dir``."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    from whisper_ft.models.io import save_whisper_folder

    tok = build_tiny_tokenizer(languages)
    gen = build_generation_config(tok, alignment_heads=[[layers - 1, 0], [layers - 1, 1]])
    config = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=N_MELS,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=gen.pad_token_id,
        bos_token_id=gen.bos_token_id,
        eos_token_id=gen.eos_token_id,
        decoder_start_token_id=gen.decoder_start_token_id,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = gen
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=N_MELS), tokenizer=tok)
    return save_whisper_folder(out_dir, model, processor)

"""Import a CTranslate2 Whisper model (``model.bin``) into transformers format.

The variable layout is the one ``ctranslate2.specs.whisper_spec.WhisperSpec`` defines and the
converter (``ctranslate2.converters.transformers.WhisperLoader``) fills:

- self-attention q/k/v are fused into ``linear_0`` (rows q, k, v), with a zero bias for k
  (transformers' k_proj has no bias);
- cross-attention keeps q in ``linear_0`` and fuses k/v into ``linear_1``; the output
  projection is the last linear;
- q-scaling is not folded into the weights, so they copy over unchanged;
- ``decoder/projection/weight`` is an alias of the token embeddings (tied, as in transformers).

Exporting the imported model back with the CTranslate2 converter reproduces the original
weights bit for bit (tested), so the import loses nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from whisper_ft.core.errors import ModelNotFoundError
from whisper_ft.models.ct2_format import CT2Model, as_float32, read_ct2_model
from whisper_ft.models.generation import build_generation_config
from whisper_ft.models.io import save_whisper_folder


def _count_layers(model: CT2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model:
        n += 1
    return n


def ct2_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper variables to transformers ``WhisperForConditionalGeneration`` keys."""
    w = lambda name: as_float32(model, name)  # noqa: E731
    sd: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = w(f"{ct2}/weight")
        if bias:
            sd[f"{hf}.bias"] = w(f"{ct2}/bias")

    def layer_norm(hf: str, ct2: str) -> None:
        sd[f"{hf}.weight"] = w(f"{ct2}/gamma")
        sd[f"{hf}.bias"] = w(f"{ct2}/beta")

    def split_rows(ct2: str, parts: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        weight, bias = w(f"{ct2}/weight"), w(f"{ct2}/bias")
        return np.split(weight, parts, axis=0), np.split(bias, parts, axis=0)

    def self_attention(hf: str, ct2: str) -> None:
        (wq, wk, wv), (bq, _bk, bv) = split_rows(f"{ct2}/linear_0", 3)
        sd.update({f"{hf}.q_proj.weight": wq, f"{hf}.q_proj.bias": bq, f"{hf}.k_proj.weight": wk,
                   f"{hf}.v_proj.weight": wv, f"{hf}.v_proj.bias": bv})
        linear(f"{hf}.out_proj", f"{ct2}/linear_1")

    def cross_attention(hf: str, ct2: str) -> None:
        linear(f"{hf}.q_proj", f"{ct2}/linear_0")
        (wk, wv), (_bk, bv) = split_rows(f"{ct2}/linear_1", 2)
        sd.update({f"{hf}.k_proj.weight": wk, f"{hf}.v_proj.weight": wv, f"{hf}.v_proj.bias": bv})
        linear(f"{hf}.out_proj", f"{ct2}/linear_2")

    def ffn(hf: str, ct2: str) -> None:
        layer_norm(f"{hf}.final_layer_norm", f"{ct2}/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/linear_1")

    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        linear(f"{enc}.{conv}", f"encoder/{conv}")
    sd[f"{enc}.embed_positions.weight"] = w("encoder/position_encodings/encodings")
    for i in range(_count_layers(model, "encoder")):
        layer_norm(f"{enc}.layers.{i}.self_attn_layer_norm", f"encoder/layer_{i}/self_attention/layer_norm")
        self_attention(f"{enc}.layers.{i}.self_attn", f"encoder/layer_{i}/self_attention")
        ffn(f"{enc}.layers.{i}", f"encoder/layer_{i}/ffn")
    layer_norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = w("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = w("decoder/position_encodings/encodings")
    for i in range(_count_layers(model, "decoder")):
        p = f"decoder/layer_{i}"
        layer_norm(f"{dec}.layers.{i}.self_attn_layer_norm", f"{p}/self_attention/layer_norm")
        self_attention(f"{dec}.layers.{i}.self_attn", f"{p}/self_attention")
        layer_norm(f"{dec}.layers.{i}.encoder_attn_layer_norm", f"{p}/attention/layer_norm")
        cross_attention(f"{dec}.layers.{i}.encoder_attn", f"{p}/attention")
        ffn(f"{dec}.layers.{i}", f"{p}/ffn")
    layer_norm(f"{dec}.layer_norm", "decoder/layer_norm")
    if "decoder/projection/weight" in model:
        proj = w("decoder/projection/weight")
        if not np.array_equal(proj, sd[f"{dec}.embed_tokens.weight"]):
            sd["proj_out.weight"] = proj  # untied output projection (not in OpenAI's models)
    return sd


def whisper_config_for(model: CT2Model, tokenizer):
    """A ``WhisperConfig`` whose sizes come from the variables' shapes."""
    from transformers import WhisperConfig

    from whisper_ft.models.generation import special_token_ids

    ids = special_token_ids(tokenizer)
    d_model, n_mels, _ = model.get("encoder/conv1/weight").shape
    vocab_size = model.get("decoder/embeddings/weight").shape[0]
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=int(model.get("encoder/num_heads")),
        decoder_attention_heads=int(model.get("decoder/num_heads")),
        encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        tie_word_embeddings="decoder/projection/weight" not in model.variables,
    )


def load_ct2_tokenizer(ct2_dir: Path):
    """A ``WhisperTokenizer`` from the CT2 folder's ``tokenizer.json``."""
    from tokenizers import Tokenizer
    from transformers import WhisperTokenizer

    tok_file = ct2_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise ModelNotFoundError(
            f"{ct2_dir} has no tokenizer.json: copy the tokenizer of the original model into it "
            "(faster-whisper needs it too)"
        )
    tokenizer = WhisperTokenizer(tokenizer_object=Tokenizer.from_file(str(tok_file)))
    if tokenizer.pad_token is None:  # as OpenAI's tokenizer_config.json: pad with <|endoftext|>
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def load_ct2_feature_extractor(ct2_dir: Path, n_mels: int):
    from transformers import WhisperFeatureExtractor

    pre = ct2_dir / "preprocessor_config.json"
    if pre.is_file():
        fe = WhisperFeatureExtractor.from_pretrained(str(ct2_dir))
        if fe.feature_size == n_mels:
            return fe
    return WhisperFeatureExtractor(feature_size=n_mels)


def import_ct2_model(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a transformers Whisper folder for the CTranslate2 model in ``ct2_dir``."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    model_bin = ct2_dir / "model.bin"
    if not model_bin.is_file():
        raise ModelNotFoundError(f"{ct2_dir} is not a CTranslate2 folder (no model.bin)")
    ct2 = read_ct2_model(model_bin)
    if ct2.spec_name != "WhisperSpec":
        raise ModelNotFoundError(f"{model_bin} holds a {ct2.spec_name}, not a Whisper model")
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}

    tokenizer = load_ct2_tokenizer(ct2_dir)
    config = whisper_config_for(ct2, tokenizer)
    generation_config = build_generation_config(
        tokenizer,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads") or []],
    )
    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ct2_state_dict(ct2).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise ValueError(f"CTranslate2 import mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.generation_config = generation_config
    processor = WhisperProcessor(
        feature_extractor=load_ct2_feature_extractor(ct2_dir, config.num_mel_bins), tokenizer=tokenizer
    )
    provenance = {"imported_from": str(ct2_dir.resolve()), "spec_revision": ct2.spec_revision,
                  "source_dtype": str(ct2.get("decoder/embeddings/weight").dtype)}
    save_whisper_folder(out_dir, model, processor, extra_json={"whisper_ft_import.json": provenance},
                        kind="imported")
    if (ct2_dir / "tokenizer.json").is_file():  # keep the original tokenizer file byte for byte
        shutil.copyfile(ct2_dir / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir

"""Assemble a :class:`SpeechLLM` from :class:`ModelSettings`: encoder, LLM, prompt, projector, LoRA.

:func:`check_model_inputs` does the cheap checks first (encoder name resolves to a Whisper model,
LLM found with a tokenizer, GGUF readable), so that bad input is one clear error before any
weights load or any training starts; :func:`build_speech_llm` then loads the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError
from whisper_ft.speech_llm.config import ModelSettings
from whisper_ft.speech_llm.llm import LlmSource, PromptTemplate


@dataclass
class CheckedInputs:
    llm_source: LlmSource
    llm_config: object
    tokenizer: object
    encoder_source: object  # whisper_ft.models.registry.ModelSource


@dataclass
class BuiltModel:
    model: object  # SpeechLLM
    tokenizer: object
    feature_extractor: object
    prompt: PromptTemplate
    resolved: dict  # what was actually loaded (recorded in the run config)


def check_model_inputs(settings: ModelSettings, *, llm_path: str | None = None) -> CheckedInputs:
    """Resolve the encoder and the LLM without loading weights; one clear error for bad input.

    ``llm_path`` (a run's recorded LLM folder) is tried first when it still exists.
    """
    from whisper_ft.models.io import is_hf_whisper_folder
    from whisper_ft.models.registry import resolve_model
    from whisper_ft.speech_llm.llm import check_llm, resolve_llm

    try:
        encoder_source = resolve_model(settings.encoder)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"--encoder: {exc}") from exc
    if encoder_source.kind == "hf" and not is_hf_whisper_folder(encoder_source.path):
        raise WhisperFtError(f"--encoder {settings.encoder} is not a Whisper model")
    if llm_path and Path(llm_path).is_dir() and (Path(llm_path) / "config.json").is_file():
        llm_source = LlmSource(name=settings.llm, path=llm_path, kind="folder")
    else:
        llm_source = resolve_llm(settings.llm, settings.llm_gguf)
    llm_config, tokenizer = check_llm(llm_source)
    return CheckedInputs(llm_source, llm_config, tokenizer, encoder_source)


def _add_lora(lm, settings: ModelSettings, adapter_dir: Path | None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_dir is not None:
        return PeftModel.from_pretrained(lm, str(adapter_dir), is_trainable=False)
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=list(settings.lora_target), task_type="CAUSAL_LM", bias="none")
    try:
        return get_peft_model(lm, config)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if hasattr(m, "weight")
                        and m.__class__.__name__ == "Linear"})
        raise WhisperFtError(f"--lora_target {','.join(settings.lora_target)}: not found in the LLM; its linear "
                             f"layers are: {', '.join(names[:12])}") from exc


def build_speech_llm(settings: ModelSettings, checked: CheckedInputs, *, dtype=None, device: str = "cpu",
                     seed: int | None = None, adapter_dir: Path | None = None) -> BuiltModel:
    """Load the encoder and LLM, render the prompt, create the projector (seeded) and LoRA.

    ``adapter_dir``: a saved run's LoRA folder to load (frozen) instead of fresh adapters.
    """
    import torch

    from whisper_ft.speech_llm.encoder import load_whisper_encoder
    from whisper_ft.speech_llm.llm import build_prompt, load_llm
    from whisper_ft.speech_llm.model import SpeechLLM
    from whisper_ft.speech_llm.projector import FrameConcatProjector

    encoder = load_whisper_encoder(settings.encoder, dtype=dtype, device=device)
    lm = load_llm(checked.llm_source, dtype=dtype, device=device)
    tokenizer = checked.tokenizer
    prompt = build_prompt(tokenizer, settings.prompt, getattr(lm, "generation_config", None))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prompt.end_id
    if seed is not None:
        torch.manual_seed(seed)
    d_enc = encoder.encoder.config.d_model
    d_llm = lm.get_input_embeddings().weight.shape[1]
    projector = FrameConcatProjector(settings.frames_per_token, d_enc, d_llm, settings.projector_hidden).to(device)
    llm = _add_lora(lm, settings, adapter_dir) if settings.use_lora else lm
    model = SpeechLLM(encoder.encoder, projector, llm, prompt, pad_id)
    src = checked.llm_source
    resolved = {
        "encoder": {"name": settings.encoder, "path": str(encoder.path), "fingerprint": encoder.fingerprint,
                    "d_model": d_enc},
        "llm": {"name": src.name, "path": str(Path(src.path).resolve()) if src.kind != "hub" else src.path,
                "kind": src.kind, "gguf_file": src.gguf_file, "model_type": checked.llm_config.model_type,
                "hidden_size": d_llm},
        "prompt": {"text": prompt.text, "prefix_ids": list(prompt.prefix_ids), "suffix_ids": list(prompt.suffix_ids),
                   "end_id": prompt.end_id, "chat_template": prompt.chat_template},
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return BuiltModel(model=model, tokenizer=tokenizer, feature_extractor=encoder.feature_extractor, prompt=prompt,
                      resolved=resolved)

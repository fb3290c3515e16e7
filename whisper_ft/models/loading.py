"""Load any model whisper-ft can name into transformers: (model, processor).

``load_whisper("base")``, ``load_whisper("models/whisper-base/best")`` (LoRA adapter, applied on
its base), ``load_whisper("models/x-ct2")`` (CTranslate2, imported once and cached) and
``load_whisper("openai/whisper-tiny")`` (hub) all return the same typed :class:`LoadedWhisper`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.console import log
from whisper_ft.core.errors import ModelNotFoundError
from whisper_ft.models.registry import ModelSource, cache_dir, resolve_model


@dataclass
class LoadedWhisper:
    model: object  # WhisperForConditionalGeneration or a peft PeftModel around one
    processor: object  # WhisperProcessor
    source: ModelSource
    hf_path: Path | str  # the transformers folder (or hub id) the weights came from

    @property
    def is_adapter(self) -> bool:
        return self.source.kind == "adapter"


def imported_dir_for(ct2_dir: Path) -> Path:
    """The cache folder for the transformers import of a CTranslate2 folder.

    Keyed by the model.bin's path, size and mtime, so a changed model is imported again.
    """
    ct2_dir = Path(ct2_dir).resolve()
    stat = (ct2_dir / "model.bin").stat()
    key = hashlib.sha1(f"{ct2_dir}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "imported" / f"{ct2_dir.name}-{key}"


def ensure_hf_folder(source: ModelSource) -> Path | str:
    """A transformers folder (or hub id) for ``source``: CTranslate2 folders are imported once."""
    if source.kind in ("hf", "hub"):
        return source.path
    if source.kind == "ct2":
        out = imported_dir_for(Path(source.path))
        if not (out / "config.json").is_file():
            from whisper_ft.models.ct2_import import import_ct2_model

            log(f"importing CTranslate2 model {source.path} -> {out} (once; cached)")
            import_ct2_model(source.path, out)
        return out
    if source.kind == "adapter":
        return ensure_hf_folder(adapter_base(Path(source.path)))
    raise ModelNotFoundError(f"cannot load {source.describe()}")


def adapter_base(adapter_dir: Path) -> ModelSource:
    """Resolve the base model an adapter was trained on (recorded in adapter_config.json)."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelNotFoundError(f"{adapter_dir}/adapter_config.json names no base model (base_model_name_or_path)")
    try:
        return resolve_model(base)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"the base model of adapter {adapter_dir} cannot be found ({base!r}): {exc}; "
            "fix base_model_name_or_path in its adapter_config.json"
        ) from exc


def load_processor(path: Path | str):
    from transformers import WhisperProcessor

    processor = WhisperProcessor.from_pretrained(str(path))
    ensure_pad_token(processor.tokenizer)
    return processor


def ensure_pad_token(tokenizer) -> None:
    """OpenAI's Whisper tokenizers pad with ``<|endoftext|>``; a tokenizer rebuilt from a bare
    ``tokenizer.json`` (CTranslate2 folders) has no pad token, and ``tokenizer.pad`` would fail."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def load_whisper(name_or_path, *, dtype=None, device: str = "cpu", source: ModelSource | None = None) -> LoadedWhisper:
    """Load a model (by name or folder) with its processor; see the module docstring."""
    from transformers import WhisperForConditionalGeneration

    source = source or resolve_model(name_or_path)
    hf_path = ensure_hf_folder(source)
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        model = WhisperForConditionalGeneration.from_pretrained(str(hf_path), **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {source.name!r} from {hf_path}: {exc}") from exc
    processor_path = hf_path
    if source.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source.path))
        apply_adapter_generation_config(model, Path(source.path))
        # Adapters saved by whisper-ft carry their own processor files.
        if (Path(source.path) / "preprocessor_config.json").is_file():
            processor_path = source.path
    processor = load_processor(processor_path)
    model.to(device)
    model.eval()
    return LoadedWhisper(model=model, processor=processor, source=source, hf_path=hf_path)


def apply_adapter_generation_config(model, adapter_dir: Path) -> None:
    """Decode an adapter with the generation settings saved beside it (whisper-ft writes them with
    every best/ adapter), not the base model's."""
    if (adapter_dir / "generation_config.json").is_file():
        from transformers import GenerationConfig

        # On the wrapped model: PeftModel.generate uses its base model's config.
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.generation_config = GenerationConfig.from_pretrained(str(adapter_dir))

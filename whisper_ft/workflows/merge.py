"""Merge a LoRA/AdaLoRA adapter into its base model: a plain transformers Whisper folder.

``merge_lora("models/whisper-base/best", "models/")`` writes ``models/whisper-base-finetune/``
(Whisper-Finetune's naming): the merged weights (float32 by default, or float16/bfloat16),
``config.json``, ``generation_config.json``, the tokenizer (``tokenizer.json`` included) and
``preprocessor_config.json`` and a ``README.md`` model card (the adapter's, this step added), loadable by ``WhisperForConditionalGeneration`` /
``WhisperProcessor`` and convertible with CTranslate2's converter (``whisper-ft`` serves it).
The folder is written aside and renamed into place; an existing non-empty folder is only
replaced with ``force=True``, and only when it is an export whisper-ft wrote
(:func:`whisper_ft.models.output_dir.check_output_dir`, checked before any weights load).

``scale`` multiplies the adapter's update before merging (base + scale * delta): below 1 it
interpolates between the base and the fine-tuned model (WiSE-FT), trading some of the new domain
for less forgetting of everything else, without retraining.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.console import log
from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError
from whisper_ft.models.io import is_adapter_folder, is_hf_whisper_folder
from whisper_ft.models.output_dir import check_output_dir
from whisper_ft.models.registry import MODELS_DIR, bundled_for

DTYPES = ("float32", "float16", "bfloat16")
MERGE_INFO_FILE = "whisper_ft_merge.json"
MAX_SCALE = 2.0  # --scale above 1 extrapolates the update; beyond 2 is almost surely a typo


@dataclass
class MergeResult:
    output_dir: Path
    adapter_dir: Path
    base_model: str
    dtype: str
    scale: float = 1.0

    def to_dict(self) -> dict:
        return {"output_dir": str(self.output_dir), "adapter_dir": str(self.adapter_dir),
                "base_model": self.base_model, "dtype": self.dtype, "scale": self.scale}


def newest_adapter(models_dir: str | Path = MODELS_DIR) -> Path:
    """The most recently written ``models_dir/*/best`` adapter (what a bare `whisper-ft merge` uses)."""
    models_dir = Path(models_dir)
    candidates = [p for p in models_dir.glob("*/best") if is_adapter_folder(p)]
    if not candidates:
        raise WhisperFtError(
            f"no fine-tuned adapter found in {models_dir}/*/best: pass --lora_model (run `whisper-ft finetune` first)"
        )
    return max(candidates, key=lambda p: (p / "adapter_config.json").stat().st_mtime)


def base_model_of(adapter_dir: Path) -> str:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelNotFoundError(f"{adapter_dir}/adapter_config.json names no base model (base_model_name_or_path)")
    return str(base)


def merged_name(base_model: str) -> str:
    """``openai/whisper-base`` / ``base`` -> ``whisper-base-finetune``; a folder -> ``<name>-finetune``."""
    bundled = bundled_for(base_model)
    stem = bundled.name if bundled else (Path(base_model.rstrip("/\\")).name or "whisper")
    return f"{stem}-finetune"


def _check_adapter_dir(path: Path) -> Path:
    if is_adapter_folder(path):
        return path
    if is_adapter_folder(path / "best"):  # a run folder: use its best/
        return path / "best"
    for model in (path, path / "best"):
        if is_hf_whisper_folder(model):  # a full fine-tune's best/ (or any whole model): no adapter
            raise WhisperFtError(
                f"--lora_model {path} is a whole model (a full fine-tune's best/ or a merged model), not a LoRA "
                f"adapter: there is nothing to merge; use {model} directly (whisper-ft convert --model {model}; "
                f"eval/infer/serve --model_path {model}; compare --models ... {model})")
    raise WhisperFtError(f"--lora_model {path} is not a LoRA adapter folder (no adapter_config.json)")


def merge_lora(
    lora_model: str | Path,
    output_dir: str | Path = MODELS_DIR,
    *,
    dtype: str = "float32",
    force: bool = False,
    scale: float = 1.0,
) -> MergeResult:
    """Merge ``lora_model`` into its base model and write ``output_dir/<base>-finetune``."""
    import torch
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.models.card import derived_facts, read_facts
    from whisper_ft.models.io import save_whisper_folder
    from whisper_ft.models.loading import (
        adapter_base,
        apply_adapter_generation_config,
        ensure_hf_folder,
        load_processor,
    )

    if dtype not in DTYPES:
        raise WhisperFtError(f"unknown --dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if not 0.0 < scale <= MAX_SCALE:
        raise WhisperFtError(f"--scale {scale} is out of range: use a number in (0, {MAX_SCALE:g}] "
                             "(1 = the adapter as trained, 0.5 = halfway between base and fine-tuned)")
    adapter_dir = _check_adapter_dir(Path(lora_model))
    base_name = base_model_of(adapter_dir)
    if str(output_dir).strip() == "":
        raise WhisperFtError("--output_dir is empty: name the folder the merged model goes in (e.g. models/)")
    out = Path(output_dir) / merged_name(base_name)
    source = adapter_base(adapter_dir)  # raises "the base model of adapter ... cannot be found"
    # The shared output policy, before any weights load: --force replaces only an export whisper-ft wrote.
    protected = [(adapter_dir, "the adapter being merged")]
    if source.kind != "hub":
        protected.append((source.path, "the base model"))
    check_output_dir(out, force=force, sources=protected)

    hf_path = ensure_hf_folder(source)
    log(f"merging {adapter_dir} into {base_name} ({hf_path})")
    try:
        base = WhisperForConditionalGeneration.from_pretrained(str(hf_path), dtype=torch.float32)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load base model {base_name!r} from {hf_path}: {exc}") from exc
    with warnings.catch_warnings():
        # AdaLoRA adapters name their final ranks per lora_E parameter; peft resizes the modules by
        # them while loading, but its generic key check still reports them as unmatched.
        warnings.filterwarnings("ignore", message=".*rank_pattern keys did not match.*")
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
        if scale != 1.0:
            scale_adapter(peft_model, scale)
        merged = peft_model.merge_and_unload()
    apply_adapter_generation_config(merged, adapter_dir)
    merged.eval()
    # The adapter folder carries the processor it was trained with; fall back to the base's.
    processor = load_processor(adapter_dir if (adapter_dir / "preprocessor_config.json").is_file() else hf_path)
    info = {"adapter": str(adapter_dir.resolve()), "base_model": base_name, "dtype": dtype, "scale": scale}
    card = derived_facts(read_facts(adapter_dir), kind="merged", name=out.name,
                         step=f"adapter merged into the base ({dtype}" + (f", update scaled by {scale:g}" if scale != 1
                                                                          else "") + ")",
                         base_model=None, source=base_name)
    save_whisper_folder(out, merged, processor, extra_json={MERGE_INFO_FILE: info}, dtype=getattr(torch, dtype),
                        kind="merged", card=card)
    return MergeResult(output_dir=out, adapter_dir=adapter_dir, base_model=base_name, dtype=dtype, scale=scale)


def scale_adapter(peft_model, scale: float) -> int:
    """Multiply every LoRA/AdaLoRA layer's update by ``scale`` (its ``scaling`` factor); returns
    the number of layers scaled."""
    n = 0
    for module in peft_model.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and hasattr(module, "lora_A"):
            for name in scaling:
                scaling[name] *= scale
            n += 1
    if n == 0:
        raise WhisperFtError("--scale: the adapter has no LoRA layers to scale")
    return n

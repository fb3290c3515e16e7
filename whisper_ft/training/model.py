"""The model side of fine-tuning: resolve the base model, load it lean, add (Ada)LoRA adapters
or make every weight trainable (``--method full``).

- The base model name is resolved (local folder, bundled model, hub) before any data is read, so
  a typo fails at once; a CTranslate2 base is imported to transformers format once and cached.
- Weights load with SDPA attention. With adapters everything else is frozen (peft); on CUDA with
  ``--fp16``/``--bf16`` the frozen weights are loaded in half precision (no fp32 copy is needed
  for weights that are never updated), the adapters stay in fp32. A full fine-tune keeps fp32
  weights (mixed precision autocasts the compute); ``--freeze_encoder`` freezes the encoder.
- ``--kl_to_base`` with a full fine-tune needs the base as it was: :func:`frozen_reference` is a
  copy on the training device (adapters get it for free by switching themselves off).
- The adapter records the base model as the user named it (a bundled name or hub id as given, a
  folder as an absolute path), so ``whisper-ft merge`` and ``load_whisper`` can find it again.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError
from whisper_ft.models.registry import ModelSource
from whisper_ft.training.config import LoraSettings, TrainSettings
from whisper_ft.trainkit.dist import log_main


@dataclass
class BaseModel:
    """A resolved base model: where its transformers weights are and how to name it again."""

    source: ModelSource
    hf_path: Path | str  # transformers folder or hub id
    recorded_name: str  # written to adapter_config.json's base_model_name_or_path


def resolve_base_model(name: str) -> BaseModel:
    """Resolve ``name`` to transformers weights; :class:`ModelNotFoundError` when it cannot be."""
    from whisper_ft.models.loading import ensure_hf_folder
    from whisper_ft.models.registry import resolve_model

    source = resolve_model(name)
    if source.kind == "adapter":
        raise ModelNotFoundError(
            f"{name} is a LoRA adapter, not a base model: pass its base model as --base_model "
            "(or `whisper-ft merge` it first and fine-tune the merged model)"
        )
    recorded = str(Path(source.path).resolve()) if source.origin == "local" else name
    return BaseModel(source=source, hf_path=ensure_hf_folder(source), recorded_name=recorded)


def base_hub_id(base: BaseModel) -> str | None:
    """The hub id the base model is (a model card's ``base_model``): the hub id as named, the one a
    bundled model copies, or None for a local folder."""
    from whisper_ft.models.registry import bundled_for, looks_like_hub_id

    bundled = bundled_for(base.source.name)
    if bundled is not None:
        return bundled.hub_id
    name = str(base.source.name)
    return name if looks_like_hub_id(name) and not base.source.origin == "local" else None


def load_processor(base: BaseModel):
    from whisper_ft.models.loading import load_processor as load_whisper_processor

    try:
        return load_whisper_processor(base.hf_path)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load the processor of {base.source.name!r} from {base.hf_path}: {exc}") from exc


def check_hardware(train: TrainSettings) -> None:
    """Fail early (one line) on options this machine cannot honour."""
    import torch

    cuda = torch.cuda.is_available()
    if train.use_8bit:
        if not cuda:
            raise WhisperFtError("--use_8bit needs a CUDA GPU (bitsandbytes 8-bit weights); train without it on CPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise WhisperFtError("--use_8bit needs bitsandbytes: pip install bitsandbytes")
    if train.fp16 and not cuda:
        raise WhisperFtError("--fp16 needs a CUDA GPU; on CPU train in float32 (default) or try --bf16")
    if train.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise WhisperFtError("--deepspeed needs DeepSpeed: pip install deepspeed")


def load_base_for_training(base: BaseModel, train: TrainSettings, *, device_index: int = 0, full: bool = False):
    """The base model: SDPA attention; for adapters (frozen-to-be) half-precision weights on CUDA with
    AMP, or 8-bit; for a full fine-tune (``full``) float32 weights, the optimizer's master copy."""
    import torch
    from transformers import WhisperForConditionalGeneration

    kwargs = {"attn_implementation": "sdpa", "dtype": torch.float32}
    if torch.cuda.is_available() and (train.fp16 or train.bf16) and not full:
        kwargs["dtype"] = torch.float16 if train.fp16 else torch.bfloat16
    if train.use_8bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device_index}
    try:
        model = WhisperForConditionalGeneration.from_pretrained(str(base.hf_path), **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {base.source.name!r} from {base.hf_path}: {exc}") from exc
    # Generation is driven by language=/task= arguments; no stale forced ids from old configs.
    for cfg in (model.config, model.generation_config):
        if getattr(cfg, "forced_decoder_ids", None) is not None:
            cfg.forced_decoder_ids = None
    model.config.use_cache = False  # no KV cache while training (generate() turns it back on)
    if train.use_8bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
    elif train.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack)
        # and with DDP.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def linear_module_names(model) -> set[str]:
    """The short names of the model's Linear layers (what --target_modules can name)."""
    import torch

    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}


def adapter_targets(model, lora: LoraSettings) -> list[str]:
    """What peft wraps: the short names, or with ``--lora_encoder_layers N`` the full names of those
    modules in the decoder and in the top N encoder layers.

    The encoder layers below get no adapter and their input needs no gradient, so autograd keeps
    none of their activations: the memory of 30 s windows is in the encoder's activations."""
    import torch

    if lora.encoder_layers is None:
        return list(lora.target_modules)
    n_layers = model.config.encoder_layers
    if lora.encoder_layers > n_layers:
        raise WhisperFtError(f"--lora_encoder_layers {lora.encoder_layers}: this model has {n_layers} encoder layers")
    first_trained = n_layers - lora.encoder_layers
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rsplit(".", 1)[-1] not in lora.target_modules:
            continue
        parts = name.split(".")
        if "encoder" in parts:
            i = parts.index("encoder")
            if parts[i + 1:i + 2] != ["layers"] or int(parts[i + 2]) < first_trained:
                continue
        names.append(name)
    return names


def adalora_schedule(total_steps: int) -> dict[str, int]:
    """AdaLoRA's phases for a run of ``total_steps`` optimizer steps.

    The first 10% train at the initial rank (``tinit``), the rank budget then shrinks (cubic
    schedule, masks updated every ``deltaT`` steps) down to the target, and the last 20%
    (``tfinal``) fine-tune with the final ranks.
    """
    if total_steps < 2:
        raise WhisperFtError(
            f"--use_adalora needs at least 2 optimizer steps to reallocate ranks (this run has {total_steps})"
        )
    return {
        "total_step": total_steps,
        "tinit": int(0.1 * total_steps),
        "tfinal": max(1, int(0.2 * total_steps)),
        "deltaT": max(1, min(10, total_steps // 50)),
    }


def add_adapters(model, lora: LoraSettings, *, recorded_name: str, total_steps: int):
    """Wrap ``model`` in a peft model with LoRA (or AdaLoRA) adapters; everything else frozen."""
    import warnings

    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    available = linear_module_names(model)
    unknown = [m for m in lora.target_modules if m not in available]
    if unknown:
        raise WhisperFtError(
            f"--target_modules: {', '.join(unknown)} not in this model; Linear modules: {', '.join(sorted(available))}"
        )
    targets = adapter_targets(model, lora)
    common = {"target_modules": targets, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout}
    if lora.use_adalora:
        config = AdaLoraConfig(
            init_r=lora.r,
            target_r=lora.adalora_target_r,
            beta1=0.85,
            beta2=0.85,
            orth_reg_weight=0.5,
            **adalora_schedule(total_steps),
            **common,
        )
    else:
        config = LoraConfig(r=lora.r, bias="none", **common)
    with warnings.catch_warnings():  # peft probes a transformers attribute deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = recorded_name
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    kind = "AdaLoRA" if lora.use_adalora else "LoRA"
    where = "" if lora.encoder_layers is None else f" (decoder + top {lora.encoder_layers} encoder layers)"
    log_main(f"{kind} r={lora.r} on {', '.join(lora.target_modules)}{where}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.2f}%)")
    return peft_model


def set_adalora_total_steps(peft_model, total_steps: int) -> bool:
    """Make AdaLoRA's schedule match the real number of optimizer steps; True when it changed."""
    config = peft_model.peft_config["default"]
    if getattr(config, "total_step", None) == total_steps:
        return False
    for key, value in adalora_schedule(total_steps).items():
        setattr(config, key, value)  # the rank allocator reads this same config object
    return True


def _n_params(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def prepare_full_model(model, *, freeze_encoder: bool):
    """``--method full``: every weight trains (Whisper's fixed sinusoidal encoder positions excepted),
    or with ``freeze_encoder`` the decoder's only (the encoder then keeps no activations for backward)."""
    if freeze_encoder:
        model.model.encoder.requires_grad_(False)
    trainable, total = _n_params(model, trainable_only=True), _n_params(model)
    where = "the decoder (--freeze_encoder)" if freeze_encoder else "encoder and decoder"
    log_main(f"full fine-tuning of {where}: {trainable:,} trainable of {total:,} parameters "
             f"({100 * trainable / total:.1f}%)")
    return model


def frozen_reference(model, train: TrainSettings):
    """A frozen copy of ``model`` as loaded, for ``--kl_to_base`` with a full fine-tune (the adapters'
    base is the same network with the adapters off; a full fine-tune changes the network itself).

    It lives on the training device (the Trainer moves it there); with ``--fp16``/``--bf16`` on CUDA
    it is kept in that precision (it only runs under autocast). Says what it costs."""
    import copy

    import torch

    reference = copy.deepcopy(model).eval().requires_grad_(False)
    if torch.cuda.is_available() and (train.fp16 or train.bf16):
        reference = reference.to(torch.float16 if train.fp16 else torch.bfloat16)
    n = _n_params(reference)
    size = sum(p.numel() * p.element_size() for p in reference.parameters())
    where = "GPU" if torch.cuda.is_available() else "CPU"
    log_main(f"--kl_to_base with --method full: a frozen copy of the base model stays on the training device "
             f"({where}) for the reference pass: {n:,} parameters, {size / 2**20:,.0f} MiB more memory, one more "
             "forward pass per step")
    return reference

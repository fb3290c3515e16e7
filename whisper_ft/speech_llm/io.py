"""The speech-LLM run folder: saving, recognising and loading it.

A run folder (``best/``, and every ``checkpoint-N/``) holds only what was trained, plus a config
that names the rest:

- ``speech_llm_config.json``: the run config (encoder and LLM names, projector, prompt, LoRA, decoding
  defaults) and ``resolved`` (the encoder and LLM folders actually loaded, prompt token ids, widths);
- ``projector.safetensors``: the projector;
- ``llm_adapter/``: the LoRA adapter (a peft folder), when the LLM has one;
- ``metrics.json`` (``best/`` only): the evaluation that made it the best.

``best/`` is written aside and renamed into place. :func:`load_speech_llm` rebuilds the model from
such a folder; :func:`load_speech_llm_backend` gives the backend ``whisper_ft.workflows.evaluate.evaluate``
decodes with.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError
from whisper_ft.speech_llm.config import CONFIG_FILE, METRICS_FILE, DecodeSettings, ModelSettings

PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "llm_adapter"


def is_speech_llm_run(path: str | Path) -> bool:
    """A speech-LLM run folder (``best/`` or ``checkpoint-N/``), or a run directory holding ``best/``."""
    path = Path(path)
    return any((p / CONFIG_FILE).is_file() and (p / PROJECTOR_FILE).is_file() for p in (path, path / "best"))


def resolve_run(path: str | Path) -> Path:
    """``RUN_DIR`` -> ``RUN_DIR/best``; a folder that is itself a run stays; anything else is an error."""
    path = Path(path)
    for candidate in (path, path / "best"):
        if (candidate / CONFIG_FILE).is_file() and (candidate / PROJECTOR_FILE).is_file():
            return candidate
    raise ModelNotFoundError(f"{path} is not a speech-LLM run folder (no {CONFIG_FILE} + {PROJECTOR_FILE}); give a "
                             "run's best/ or checkpoint-N/ folder, or the run directory")


def write_run_files(model, folder: str | Path, run_config: dict) -> None:
    """Projector + LoRA adapter + config into ``folder`` (each file written aside and renamed)."""
    from safetensors.torch import save_file

    from whisper_ft.models.io import write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.projector.state_dict().items()}
    tmp = folder / f".{PROJECTOR_FILE}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / PROJECTOR_FILE)
    if hasattr(model.llm, "peft_config"):
        adapter = folder / ADAPTER_DIR
        staging = folder / f".{ADAPTER_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.llm.save_pretrained(str(staging), safe_serialization=True)
        shutil.rmtree(adapter, ignore_errors=True)
        staging.rename(adapter)
    write_json(folder / CONFIG_FILE, run_config)


def save_run(model, out_dir: str | Path, run_config: dict, metrics: dict | None = None) -> Path:
    """A complete run folder at ``out_dir``, written aside and renamed into place."""
    from whisper_ft.models.io import replace_dir, staging_dir, write_json

    out_dir = Path(out_dir)
    tmp = staging_dir(out_dir)
    try:
        write_run_files(model, tmp, run_config)
        if metrics is not None:
            write_json(tmp / METRICS_FILE, metrics)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_trainable(model, folder: str | Path) -> None:
    """Load a run folder's projector and LoRA weights into ``model`` (resume)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    device = model.projector.linear1.weight.device
    model.projector.load_state_dict(load_file(str(folder / PROJECTOR_FILE), device=str(device)))
    adapter = folder / ADAPTER_DIR / "adapter_model.safetensors"
    has_lora = hasattr(model.llm, "peft_config")
    if has_lora != adapter.is_file():
        raise WhisperFtError(f"{folder}: the checkpoint {'has' if adapter.is_file() else 'has no'} LoRA adapter but this "
                             "run asks for the opposite; use the same --lora_r / --freeze_llm")
    if has_lora:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model.llm, load_file(str(adapter), device=str(device)))
        if getattr(result, "unexpected_keys", None):
            raise WhisperFtError(f"{folder}: the LoRA adapter does not fit this LLM (rank or target modules differ)")


def read_run_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WhisperFtError(f"cannot read {path}: {exc}") from exc


@dataclass
class LoadedSpeechLLM:
    model: object  # SpeechLLM, eval mode, no gradients
    tokenizer: object
    feature_extractor: object
    settings: ModelSettings
    decode: DecodeSettings
    path: Path
    device: str


def load_speech_llm(path: str | Path, *, device: str = "auto", dtype=None) -> LoadedSpeechLLM:
    """Rebuild a saved run (encoder and LLM as recorded, projector and LoRA from the folder)."""
    import torch

    from whisper_ft.speech_llm.build import build_speech_llm, check_model_inputs

    folder = resolve_run(path)
    data = read_run_config(folder)
    settings = ModelSettings(**data.get("model", {}))
    settings.lora_target = tuple(settings.lora_target)
    decode = DecodeSettings(**data.get("decode", {}))
    recorded = data.get("resolved", {})
    llm_rec = recorded.get("llm", {})
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None and device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # The recorded LLM folder first (a relative --llm, or a GGUF's cached copy), else the names again.
    checked = check_model_inputs(settings, llm_path=llm_rec.get("path") if llm_rec.get("kind") != "hub" else None)
    adapter = folder / ADAPTER_DIR if settings.use_lora else None
    built = build_speech_llm(settings, checked, dtype=dtype, device=device, adapter_dir=adapter)
    model = built.model
    load_trainable(model, folder)
    want_prefix = recorded.get("prompt", {}).get("prefix_ids")
    if want_prefix is not None and list(built.prompt.prefix_ids) != list(want_prefix):
        raise WhisperFtError(f"{folder}: the LLM's tokenizer renders the prompt differently from when the run was "
                             "trained (a different LLM?)")
    model.requires_grad_(False)
    model.eval()
    return LoadedSpeechLLM(model=model, tokenizer=built.tokenizer, feature_extractor=built.feature_extractor,
                           settings=settings, decode=decode, path=folder, device=device)


def load_speech_llm_backend(path: str | Path, *, num_beams: int | None = None, device: str = "auto",
                            cpu_threads: int | None = None, max_new_tokens: int | None = None):
    """A :class:`~whisper_ft.speech_llm.decoding.SpeechLLMBackend` (the decoding seam every command
    uses) for a speech-LLM run folder (``best/``, ``checkpoint-N/`` or the run directory)."""
    from dataclasses import replace

    import torch

    from whisper_ft.speech_llm.decoding import SpeechLLMBackend

    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    loaded = load_speech_llm(path, device=device)
    decode = loaded.decode if num_beams is None else replace(loaded.decode, num_beams=num_beams)
    return SpeechLLMBackend(loaded, decode, max_new_tokens=max_new_tokens)




def _open_run(name, *, device="auto", threads=None, beam_size=None, max_new_tokens=None):
    return load_speech_llm_backend(name, num_beams=beam_size, device=device, cpu_threads=threads,
                                   max_new_tokens=max_new_tokens)


def _register() -> None:
    from whisper_ft.decoding.backend import RegisteredBackend, register_backend

    register_backend(RegisteredBackend("speech-llm", is_speech_llm_run, _open_run))


_register()  # every command that opens models (eval, infer, compare) can then open a run folder

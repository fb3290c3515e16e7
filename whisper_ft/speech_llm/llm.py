"""The causal LM: finding it (folder, hub id, GGUF file), checking it, loading it, and its prompt.

:func:`resolve_llm` turns ``--llm``/``--llm_gguf`` into an :class:`LlmSource` and
:func:`check_llm` loads its config and tokenizer (cheap) so that a missing model, a model that is
not a causal LM, a missing tokenizer or an unreadable GGUF file is one clear error before any
weights are loaded. A GGUF file is dequantized by transformers (``gguf_file=``, needs the ``gguf``
package) once and cached as a safetensors folder under ``<whisper-ft cache>/llm/``, so later
loads take about a second.

:func:`build_prompt` renders the LLM's chat template around an audio placeholder: the token ids
before the audio, the ids after it (instruction + assistant header), and the end token that
closes the transcript.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from whisper_ft.core.console import log
from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError

AUDIO_MARK = "[[AUDIO]]"  # placeholder for the audio embeddings while the chat template is rendered


@dataclass(frozen=True)
class LlmSource:
    name: str  # --llm as given (or the .gguf path)
    path: str  # what from_pretrained loads: a folder or a hub id
    kind: Literal["folder", "hub", "gguf"]
    gguf_file: str | None = None  # the original GGUF file (kind "gguf"; path is its dequantized copy)

    def describe(self) -> str:
        where = f"{self.gguf_file} (dequantized copy {self.path})" if self.gguf_file else self.path
        return f"{self.name} -> {where} ({self.kind})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _gguf_path(llm: str, gguf: str | None) -> Path | None:
    if gguf:
        for candidate in (Path(gguf).expanduser(), Path(llm).expanduser() / gguf):
            if candidate.is_file():
                return candidate
        raise ModelNotFoundError(f"--llm_gguf {gguf}: no such file (give a path, or a file name inside the --llm folder)")
    if llm.lower().endswith(".gguf"):
        path = Path(llm).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"--llm {llm}: no such GGUF file")
        return path
    return None


def dequantized_dir(gguf: Path) -> Path:
    """Cache folder of a GGUF file's dequantized copy, keyed by its path, size and mtime."""
    from whisper_ft.models.registry import cache_dir

    gguf = gguf.resolve()
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "llm" / f"{gguf.stem}-{key}"


def _dequantize(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from whisper_ft.models.io import replace_dir, staging_dir

    if importlib.util.find_spec("gguf") is None:
        raise WhisperFtError("reading a GGUF file needs the gguf package: pip install 'whisper-ft[llm]' (or pip install gguf)")
    log(f"dequantizing {gguf} -> {out} (once; cached)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001 - anything transformers cannot read is the same user error
        raise WhisperFtError(f"cannot read GGUF file {gguf}: {_first_line(exc)} (is it a causal LM that transformers' "
                             "GGUF support knows?)") from exc
    tmp = staging_dir(out)
    try:
        # save_pretrained refuses a model loaded from GGUF ("quantized, not serializable"), but
        # its weights are plain dequantized tensors: write them and a config without the GGUF marks
        from safetensors.torch import save_model

        config = model.config
        for attr in ("quantization_config", "gguf_file"):
            if hasattr(config, attr):
                delattr(config, attr)
        config.save_pretrained(str(tmp))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_llm(llm: str, gguf: str | None = None) -> LlmSource:
    """``--llm``/``--llm_gguf`` -> where transformers loads the LLM from (GGUF: dequantized once)."""
    from whisper_ft.models.registry import is_offline

    llm = str(llm or "").strip()
    if not llm:
        raise WhisperFtError("--llm is missing: give a causal LM folder, hub id or .gguf file")
    gguf_path = _gguf_path(llm, gguf)
    if gguf_path is not None:
        out = dequantized_dir(gguf_path)
        if not (out / "config.json").is_file():
            _dequantize(gguf_path, out)
        return LlmSource(name=llm if not gguf else f"{llm}:{gguf}", path=str(out), kind="gguf",
                         gguf_file=str(gguf_path.resolve()))
    path = Path(llm).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"--llm {llm} is not a transformers model folder (no config.json); give a causal "
                                     "LM folder, a hub id, or a .gguf file")
        return LlmSource(name=llm, path=str(path), kind="folder")
    if "/" not in llm or llm.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"--llm {llm}: no such folder, and not a hub id like Qwen/Qwen2.5-0.5B-Instruct")
    if is_offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(llm, "config.json")
        if not isinstance(cached, str):
            raise ModelNotFoundError(f"--llm {llm} is not a local folder and offline mode is on (the hub is off); "
                                     "give a folder or a .gguf file, or go online")
    return LlmSource(name=llm, path=llm, kind="hub")


def check_llm(source: LlmSource):
    """(config, tokenizer) of the LLM; one clear error if it is not a causal LM or has no tokenizer."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from whisper_ft.models.registry import is_offline

    kwargs = {"local_files_only": True} if is_offline() else {}
    try:
        config = AutoConfig.from_pretrained(source.path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFoundError(f"--llm {source.name}: cannot load its config ({_first_line(exc)})") from exc
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise WhisperFtError(f"--llm {source.name} is a {config.model_type!r} model, not a causal LM that "
                             "transformers' AutoModelForCausalLM knows")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise WhisperFtError(f"--llm {source.name} has no usable tokenizer ({_first_line(exc)}); the folder needs "
                             "tokenizer.json or the tokenizer's files") from exc
    if tokenizer.eos_token_id is None:
        raise WhisperFtError(f"--llm {source.name}: its tokenizer has no end-of-sequence token (eos_token)")
    return config, tokenizer


def load_llm(source: LlmSource, *, dtype=None, device: str = "cpu"):
    """The causal LM, frozen, in eval mode."""
    from transformers import AutoModelForCausalLM

    from whisper_ft.models.registry import is_offline

    kwargs = {"local_files_only": True} if is_offline() else {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFoundError(f"--llm {source.name}: cannot load its weights ({_first_line(exc)})") from exc
    model.requires_grad_(False)
    model.to(device)
    model.eval()
    return model


@dataclass(frozen=True)
class PromptTemplate:
    """Token ids around the audio: ``prefix + <audio> + suffix + transcript + end``."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    end_id: int  # closes the transcript (trained; generation stops at it)
    stop_ids: tuple[int, ...]  # every token that ends generation
    chat_template: bool  # rendered with the LLM's chat template (else a plain USER/ASSISTANT prompt)
    text: str  # the rendered prompt, with AUDIO_MARK where the audio goes (for the record)


def build_prompt(tokenizer, prompt: str, generation_config=None) -> PromptTemplate:
    """Render ``prompt`` as the user turn, with the audio first (see the module docstring)."""
    content = f"{AUDIO_MARK}{prompt}"
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
        chat = True
    else:  # SLAM-ASR's plain prompt
        text = f"USER: {content}\nASSISTANT:"
        chat = False
    if text.count(AUDIO_MARK) != 1:
        raise WhisperFtError("the LLM's chat template drops or repeats the user message; use an instruct model or "
                             "one without a chat template")
    before, after = text.split(AUDIO_MARK)
    prefix = tokenizer(before, add_special_tokens=False).input_ids
    if not chat and tokenizer.bos_token_id is not None:
        prefix = [tokenizer.bos_token_id, *prefix]
    suffix = tokenizer(after, add_special_tokens=False).input_ids
    end = int(tokenizer.eos_token_id)
    stops = [end]
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for tid in ([extra] if isinstance(extra, int) else list(extra or [])):
        if tid not in stops:
            stops.append(int(tid))
    return PromptTemplate(prefix_ids=tuple(prefix), suffix_ids=tuple(suffix), end_id=end, stop_ids=tuple(stops),
                          chat_template=chat, text=text)


def encode_transcripts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Transcript token ids (no special tokens)."""
    return [tokenizer(t.strip(), add_special_tokens=False).input_ids for t in texts]

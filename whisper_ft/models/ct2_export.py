"""Export a transformers Whisper to CTranslate2 (faster-whisper): the model-level half of ``convert``.

:func:`convert_model` runs CTranslate2's ``TransformersConverter`` and completes the folder so
faster-whisper runs it with no network: ``tokenizer.json`` and a ``preprocessor_config.json``
whose ``feature_size`` is the model's ``num_mel_bins`` (80, or 128 for large-v3), plus
``whisper_ft_conversion.json`` (source, quantization, time) and a ``README.md`` model card
(:mod:`whisper_ft.models.card`: the source's facts, this step added). The folder is written aside and
renamed into place. Any model whisper-ft can name converts: a CTranslate2 source (a folder, the
bundled whisper-base) goes through the exact CTranslate2 -> transformers import first
(:mod:`whisper_ft.models.ct2_import`). LoRA adapters are refused unless ``merge=True`` (merged on
the fly). An existing output folder is replaced only with ``force`` and only when it is an export
whisper-ft wrote (:func:`check_output_dir`, the policy every model-writing command shares). :func:`cached_conversion` is the once-per-source float32 copy
that the CTranslate2 backend opens for a non-CTranslate2 model. Nothing here decodes (the
command-level verify lives in :mod:`whisper_ft.workflows.convert`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.console import log, warn
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.models.io import replace_dir, staging_dir
from whisper_ft.models.output_dir import write_export_marker, write_json
from whisper_ft.models.registry import MODELS_DIR, ModelSource, cache_dir, resolve_model

QUANTIZATIONS = ("float16", "int8", "int8_float16", "float32", "int8_float32", "bfloat16", "int8_bfloat16", "int16")


def validate_quantization(quantization: str) -> str:
    q = (quantization or "").strip().lower()
    if q not in QUANTIZATIONS:
        raise WhisperFtError(f"unknown quantization {quantization!r}; choose one of: {', '.join(QUANTIZATIONS)}")
    return q


@dataclass
class ConversionResult:
    output_dir: Path
    source: str
    quantization: str
    n_mels: int
    seconds: float

    def summary(self) -> str:
        return (f"converted {self.source} -> {self.output_dir} ({self.quantization}, {self.n_mels} mels, "
                f"{self.seconds:.1f} s)")


def _merged_copy(source: ModelSource, work_dir: Path) -> Path:
    """Merge a LoRA adapter into its base and save the result as a transformers folder."""
    import torch

    from whisper_ft.models.io import save_whisper_folder
    from whisper_ft.models.loading import load_whisper

    log(f"merging adapter {source.path} into its base model (on the fly)")
    loaded = load_whisper(source.name, dtype=torch.float32, source=source)
    merged = loaded.model.merge_and_unload()
    return save_whisper_folder(work_dir / "merged", merged, loaded.processor)


def _complete_folder(out: Path, hf_path: Path | str) -> int:
    """Write tokenizer.json and preprocessor_config.json (with the model's n_mels) into ``out``."""
    from transformers import WhisperConfig

    from whisper_ft.models.loading import load_processor

    n_mels = int(WhisperConfig.from_pretrained(str(hf_path)).num_mel_bins)
    processor = load_processor(hf_path)
    fe = processor.feature_extractor
    if int(fe.feature_size) != n_mels:
        warn(f"{hf_path}: preprocessor feature_size {fe.feature_size} != model num_mel_bins {n_mels}; using {n_mels}")
        from transformers import WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(**{**fe.to_dict(), "feature_size": n_mels})
    fe.to_json_file(str(out / "preprocessor_config.json"))
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise WhisperFtError(f"{hf_path}: the tokenizer has no fast (tokenizer.json) form, which faster-whisper needs")
    backend.save(str(out / "tokenizer.json"))
    return n_mels


def default_output_dir(model: str | Path, quantization: str = "float16", source: ModelSource | None = None) -> Path:
    """Where `convert` writes when no ``--output_dir`` is given, distinct per quantization:
    ``<model>-ct2`` beside a local model for float16 (the default), ``<model>-<quantization>-ct2``
    otherwise (so converting one model twice never replaces the other copy); models/ for the bundled
    model and hub ids. A run's ``best/`` is named after its run; a ``-ct2`` source loses the suffix."""
    quantization = validate_quantization(quantization)
    source = source or resolve_model(model)
    if source.origin == "local":
        src = Path(source.path)
        parent, stem = src.parent, src.name
        if stem in {"best", "last", "final"} or stem.startswith("checkpoint"):
            parent, stem = src.parent.parent, f"{src.parent.name}-{stem}"
    else:
        parent, stem = MODELS_DIR, str(source.name).rstrip("/").split("/")[-1]
        from whisper_ft.models.registry import bundled_for

        bundled = bundled_for(str(source.name))
        stem = bundled.name if bundled is not None else stem
    stem = stem.removesuffix("-ct2")
    out = parent / (f"{stem}-ct2" if quantization == "float16" else f"{stem}-{quantization}-ct2")
    if source.origin == "local" and _same_path(out, Path(source.path)):  # a float16 `x-ct2` source
        out = parent / f"{stem}-{quantization}-ct2"
    return out


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def check_output_dir(output_dir: str | Path, *, force: bool = False, source: ModelSource | None = None) -> Path:
    """Refuse an output folder `convert` must not write to, before any work is done: the shared
    policy of :func:`whisper_ft.models.output_dir.check_output_dir` (with ``force``, only an export
    whisper-ft wrote is replaced, and only after the conversion succeeded)."""
    from whisper_ft.models.output_dir import check_output_dir as check_model_output_dir

    sources = [(source.path, "the source model")] if source is not None and source.kind != "hub" else []
    return check_model_output_dir(output_dir, force=force, sources=sources)


def convert_model(
    model: str | Path,
    output_dir: str | Path,
    *,
    quantization: str = "float16",
    merge: bool = False,
    force: bool = False,
) -> ConversionResult:
    """Convert ``model`` to a complete faster-whisper folder at ``output_dir``.

    ``model`` is anything whisper-ft can name: a transformers folder, a hub id, a CTranslate2 folder
    or the bundled model (imported to transformers exactly, then converted: a new precision of a
    CTranslate2 model), or with ``merge`` a LoRA adapter. ``output_dir`` must be new or empty unless
    ``force`` (see :func:`check_output_dir`); every check runs before any work, and the old folder is
    replaced only once the new one is complete."""
    quantization = validate_quantization(quantization)
    source = resolve_model(model)
    if source.kind == "adapter" and not merge:
        raise WhisperFtError(
            f"{source.path} is a LoRA adapter: run `whisper-ft merge` first, or add --merge to merge it on the fly"
        )
    output_dir = check_output_dir(output_dir, force=force, source=source)
    return _convert(source, output_dir, quantization)


def _convert(source: ModelSource, output_dir: Path, quantization: str) -> ConversionResult:
    """The conversion itself (no checks): written in a sibling temp folder, renamed into place."""
    from ctranslate2.converters import TransformersConverter

    started = time.time()
    work = tmp = None
    try:
        work = Path(tempfile.mkdtemp(prefix="whisper-ft-convert-"))
        tmp = staging_dir(output_dir)
        if source.kind == "adapter":
            hf_path = _merged_copy(source, work)
        else:
            from whisper_ft.models.loading import ensure_hf_folder

            hf_path = ensure_hf_folder(source)  # a CTranslate2 source: the exact import (cached)
        log(f"converting {hf_path} to CTranslate2 ({quantization})")
        TransformersConverter(str(hf_path)).convert(str(tmp), quantization=quantization, force=True)
        n_mels = _complete_folder(tmp, hf_path)
        write_json(tmp / "whisper_ft_conversion.json", {
            "source": str(source.path),
            "source_kind": source.kind,
            "imported_from_ct2": str(hf_path) if source.kind == "ct2" else None,
            "merged_adapter": source.kind == "adapter",
            "quantization": quantization,
            "n_mels": n_mels,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        _write_card(tmp, source, output_dir, quantization)
        write_export_marker(tmp, "ctranslate2")
        replace_dir(tmp, output_dir)
        tmp = None
    finally:
        for folder in (tmp, work):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    return ConversionResult(output_dir, str(source.path), quantization, n_mels, time.time() - started)


def _write_card(folder: Path, source: ModelSource, output_dir: Path, quantization: str) -> None:
    """The export's model card: the source's facts (its card, or a run's best/ files) + this step."""
    from whisper_ft.models.card import derived_facts, place_card, read_facts
    from whisper_ft.models.registry import bundled_for, looks_like_hub_id

    facts = read_facts(source.path) if source.origin == "local" else None
    steps = []
    if source.kind == "adapter":
        steps.append("adapter merged into the base (on the fly, float32)")
    steps.append(f"converted to CTranslate2 ({quantization})")
    bundled = bundled_for(str(source.name))
    hub_id = bundled.hub_id if bundled else (str(source.name) if looks_like_hub_id(str(source.name)) else None)
    for i, step in enumerate(steps):
        facts = derived_facts(facts, kind="ctranslate2" if i == len(steps) - 1 else "merged", name=output_dir.name,
                              step=step, base_model=hub_id, source=str(source.name))
    place_card(folder, facts, previous=output_dir if output_dir.is_dir() else None)


def _fingerprint(path: Path) -> str:
    parts = [str(path.resolve())]
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin"}:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def cached_conversion(source: ModelSource) -> Path:
    """A float32 CTranslate2 copy of a transformers model, hub model or adapter (merged), made
    once in the cache and reused while the source is unchanged."""
    if source.kind == "hub":
        key, name = hashlib.sha1(str(source.path).encode()).hexdigest()[:12], str(source.path).replace("/", "--")
    else:
        path = Path(source.path)
        key, name = _fingerprint(path), path.resolve().name
        if name in {"best", "last", "final"} or name.startswith("checkpoint"):
            name = f"{path.resolve().parent.name}-{name}"
    out = cache_dir() / "converted" / f"{name}-{key}"
    if not (out / "model.bin").is_file():
        log(f"{source.name} is not a CTranslate2 model: converting it once to {out}")
        _convert(source, out, "float32")  # our own cache folder: replaced as a whole
    return out


def conversion_info(path: str | Path) -> dict | None:
    f = Path(path) / "whisper_ft_conversion.json"
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None

"""Export a transformers Whisper to CTranslate2 (faster-whisper), and check the export.

:func:`convert_model` runs CTranslate2's ``TransformersConverter`` and completes the folder so
faster-whisper runs it with no network: ``tokenizer.json`` and a ``preprocessor_config.json``
whose ``feature_size`` is the model's ``num_mel_bins`` (80, or 128 for large-v3), plus
``whisper_ft_conversion.json`` (source, quantization, time). The folder is written aside and
renamed into place. LoRA adapters are refused unless ``merge=True`` (merged on the fly).

:func:`verify_conversion` decodes the same clips with the source (transformers) and the converted
model (CTranslate2, same prompt, greedy) and reports the CER/WER drift.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from whisper_ft.console import log, warn
from whisper_ft.errors import WhisperFtError
from whisper_ft.models.io import replace_dir, staging_dir, write_json
from whisper_ft.models.registry import ModelSource, cache_dir, resolve_model

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


def convert_model(
    model: str | Path,
    output_dir: str | Path,
    *,
    quantization: str = "float16",
    merge: bool = False,
) -> ConversionResult:
    """Convert ``model`` (a transformers folder, hub id, or with ``merge`` a LoRA adapter) to a
    complete faster-whisper folder at ``output_dir`` (replaced if present)."""
    from ctranslate2.converters import TransformersConverter

    quantization = validate_quantization(quantization)
    source = resolve_model(model)
    if source.kind == "ct2":
        raise WhisperFtError(
            f"{source.path} is already a CTranslate2 model; to run it in another precision pass "
            "--compute_type to infer-ct2/eval instead of converting again"
        )
    if source.kind == "adapter" and not merge:
        raise WhisperFtError(
            f"{source.path} is a LoRA adapter: run `whisper-ft merge` first, or add --merge to merge it on the fly"
        )
    output_dir = Path(output_dir)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="whisper-ft-convert-"))
    tmp = staging_dir(output_dir)
    try:
        hf_path = _merged_copy(source, work) if source.kind == "adapter" else source.path
        log(f"converting {hf_path} to CTranslate2 ({quantization})")
        TransformersConverter(str(hf_path)).convert(str(tmp), quantization=quantization, force=True)
        n_mels = _complete_folder(tmp, hf_path)
        write_json(tmp / "whisper_ft_conversion.json", {
            "source": str(source.path),
            "source_kind": source.kind,
            "merged_adapter": source.kind == "adapter",
            "quantization": quantization,
            "n_mels": n_mels,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ConversionResult(output_dir, str(source.path), quantization, n_mels, time.time() - started)


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
        convert_model(source.name if source.kind == "hub" else source.path, out, quantization="float32", merge=True)
    return out


@dataclass
class VerifyResult:
    metric: str
    source_error_rate: float
    converted_error_rate: float
    max_drift: float
    n_utterances: int

    @property
    def drift(self) -> float:
        """Change in error rate, in percentage points (converted minus source)."""
        return 100 * (self.converted_error_rate - self.source_error_rate)

    @property
    def passed(self) -> bool:
        return abs(self.drift) <= self.max_drift

    def summary(self) -> str:
        m = self.metric.upper()
        verdict = "OK" if self.passed else f"FAILED (more than {self.max_drift:g} points)"
        return (f"verify on {self.n_utterances} clips: {m} source {100 * self.source_error_rate:.2f}%, "
                f"converted {100 * self.converted_error_rate:.2f}%, drift {self.drift:+.2f} points: {verdict}")

    def to_dict(self) -> dict:
        return {**asdict(self), "drift": round(self.drift, 4), "passed": self.passed}


def verify_conversion(
    source_model: str | Path,
    converted_dir: str | Path,
    test_data: str | Path,
    *,
    metric: str | None = None,
    language: str | None = None,
    max_drift: float = 0.5,
    batch_size: int = 8,
    compute_type: str = "default",
    cpu_threads: int | None = None,
    show_progress: bool = True,
    max_new_tokens: int | None = None,
    source_report=None,
) -> VerifyResult:
    """Decode ``test_data`` with the source model (transformers) and the converted one
    (CTranslate2, in its stored precision unless ``compute_type``) and compare CER/WER.

    ``source_report`` (an :class:`~whisper_ft.evaluate.EvalReport` of the source on the same data
    and settings) skips decoding with the source again."""
    from whisper_ft.evaluate import EvalSettings, evaluate

    if max_drift < 0:
        raise WhisperFtError(f"--max_drift must be >= 0 (got {max_drift})")
    common = dict(test_data=test_data, metric=metric, language=language, batch_size=batch_size,
                  show_progress=show_progress, cpu_threads=cpu_threads, max_new_tokens=max_new_tokens)
    src = source_report or evaluate(EvalSettings(model=str(source_model), backend="hf", **common))
    conv = evaluate(EvalSettings(model=str(converted_dir), backend="ct2", compute_type=compute_type, **common))
    return VerifyResult(src.score.metric, src.score.error_rate, conv.score.error_rate, max_drift,
                        src.score.n_utterances)


def conversion_info(path: str | Path) -> dict | None:
    f = Path(path) / "whisper_ft_conversion.json"
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None

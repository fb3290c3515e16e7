"""`whisper-ft doctor`: every item listed, exit 1 with a fix when something needed is missing."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from pathlib import Path

import pytest

from whisper_ft.cli import main
from whisper_ft.data import tts as tts_mod
from whisper_ft.models import registry
from whisper_ft.workflows import doctor

ITEMS = ["python", "torch", "transformers", "peft", "accelerate", "ctranslate2", "cuda libraries", "faster-whisper",
         "bundled models", "speech engine", "hub", "cache"]


def run_doctor(capsys) -> tuple[int, str, str]:
    try:
        main(["doctor"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def line_of(out: str, name: str) -> str:
    """The report line of check ``name`` (status, name, detail) and its fix line, if any."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line[6:].startswith(name + " "):
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].lstrip().startswith("fix:") else ""
            return line + ("\n" + fix if fix else "")
    raise AssertionError(f"no {name!r} line in:\n{out}")


@pytest.fixture
def fresh_hub_probe():
    registry.reset_resolution_cache()
    yield
    registry.reset_resolution_cache()


@pytest.fixture
def bundled_installed():
    if not any(m.installed() for m in registry.BUNDLED_MODELS.values()):
        pytest.skip("needs the `bundled` extra (whisper-base)")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def test_doctor_lists_every_item_and_exits_0(capsys, bundled_installed):
    code, out, err = run_doctor(capsys)
    assert code == 0, out + err
    for name in ITEMS:
        assert line_of(out, name)[:4] in {"ok  ", "WARN"}, out
    assert out.rstrip().splitlines()[-1].startswith("usable")
    assert len(out.splitlines()) <= 40  # one screen
    import ctranslate2
    import torch

    assert torch.__version__ in line_of(out, "torch") and ctranslate2.__version__ in line_of(out, "ctranslate2")
    assert "CPU compute types:" in line_of(out, "ctranslate2") and "int8" in line_of(out, "ctranslate2")
    assert "whisper-base" in line_of(out, "bundled models")
    assert str(registry.cache_dir()) in line_of(out, "cache") and "GB free" in line_of(out, "cache")
    if not torch.version.cuda:
        assert "CPU-only build" in line_of(out, "torch")
    if ctranslate2.get_cuda_device_count() == 0 and not doctor._gpu_present():
        assert line_of(out, "cuda libraries") == "ok    cuda libraries  not needed (no GPU)"
    # conftest.py sets HF_HUB_OFFLINE=1: the hub is not contacted, and says so
    assert "offline mode" in line_of(out, "hub")


@pytest.mark.parametrize("module", sorted(doctor.REQUIRED_MODULES))
def test_missing_required_package_fails_with_its_fix(module, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    code, out, err = run_doctor(capsys)
    assert code == 1
    line = line_of(out, module.replace("_", "-"))
    assert line.startswith("FAIL") and f"cannot import {module}" in line
    assert f"fix: {doctor.REQUIRED_MODULES[module]}" in line
    assert out.rstrip().splitlines()[-1].startswith("not usable: ")  # (faster-whisper needs ctranslate2 too)


def test_missing_training_package_is_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    check = doctor.check_installed("peft", doctor.TRAINING_MODULES["peft"])
    assert (check.status, check.detail) == ("warn", "not installed") and "pip install peft" in check.hint


def test_hub_unreachable_is_a_warning_with_the_endpoint(monkeypatch, fresh_hub_probe, capsys, bundled_installed):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WHISPER_FT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    code, out, err = run_doctor(capsys)
    assert code == 0, out
    line = line_of(out, "hub")
    assert line.startswith("WARN") and f"{endpoint} did not answer" in line
    assert "HF_ENDPOINT" in line.splitlines()[1] and "--offline" in line.splitlines()[1]
    # with no model to fall back on, an unreachable hub makes whisper-ft unusable
    check = doctor.check_hub(bundled_installed=False)
    assert check.status == "fail" and "no bundled model" in check.detail and "whisper-ft[bundled]" in check.hint


def test_hub_reachable_through_hf_endpoint(monkeypatch, fresh_hub_probe):
    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.delenv("WHISPER_FT_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        check = doctor.check_hub(bundled_installed=False)
    finally:
        server.shutdown()
    assert (check.status, check.detail) == ("ok", f"http://127.0.0.1:{server.server_port} reachable")


def test_cuda_libraries_missing_with_a_cuda_device():
    """CTranslate2 with a CUDA device but no cuDNN: the classic faster-whisper failure, with its fix."""
    import ctypes

    try:
        ctypes.CDLL("libcudnn_ops.so.9")
        pytest.skip("cuDNN 9 is installed here")
    except OSError:
        pass
    check = doctor.check_cuda_libraries(ct2_cuda_devices=1)
    assert check.status == "fail" and "libcudnn" in check.detail
    assert "nvidia-cudnn-cu12" in check.hint and "LD_LIBRARY_PATH" in check.hint and "--device cpu" in check.hint
    if not doctor._gpu_present():
        assert doctor.check_cuda_libraries(0) == doctor.Check("cuda libraries", "ok", "not needed (no GPU)")


def test_no_speech_engine_is_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    monkeypatch.setattr(tts_mod.LibraryEngine, "_instance", None)
    monkeypatch.setattr(tts_mod.shutil, "which", lambda name: None)
    check = doctor.check_speech_engine()
    assert check.status == "warn" and check.hint == tts_mod.INSTALL_HINT
    assert check.detail.startswith("none: no espeak-ng speech engine")


def test_cache_folder_and_low_disk(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    check = doctor.check_cache()
    assert check.status == "ok" and check.detail.startswith(f"{tmp_path / 'cache'} (created on first use; ")
    monkeypatch.setattr(doctor, "LOW_DISK_BYTES", 1 << 62)
    check = doctor.check_cache()
    assert check.status == "warn" and "WHISPER_FT_CACHE" in check.hint

"""`whisper-ft doctor`: check this machine's set-up (packages, GPU libraries, models, hub, disk)."""

from __future__ import annotations

import typer

from whisper_ft.cli import app


@app.command("doctor")
def doctor() -> None:
    """Check the set-up: Python, torch (CUDA, GPUs, bf16), transformers, peft, accelerate, CTranslate2 (devices,
    compute types), faster-whisper, the cuBLAS/cuDNN libraries, bundled models, espeak-ng, the hub (HF_ENDPOINT)
    and the cache's free disk, with a fix for every problem. Exit 1 when something needed is missing."""
    from whisper_ft.workflows.doctor import render, run_checks, usable

    checks = run_checks()
    print(render(checks), flush=True)
    raise typer.Exit(0 if usable(checks) else 1)

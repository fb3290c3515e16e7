"""`whisper-ft doctor`: check this machine's set-up (packages, GPU libraries, CPU, models, hub, disk);
`whisper-ft calibrate`: measure the compute type --compute_type auto picks."""

from __future__ import annotations

import typer

from whisper_ft.cli import app


@app.command("doctor")
def doctor() -> None:
    """Check the set-up: Python, torch (CUDA, GPUs, bf16), transformers, peft, accelerate, CTranslate2 (devices,
    compute types), faster-whisper, the cuBLAS/cuDNN libraries, the CPU's instruction sets (AVX2, AVX-512, VNNI, AMX)
    and the measured --compute_type auto choices, bundled models, espeak-ng, the hub (HF_ENDPOINT) and the cache's
    free disk, with a fix for every problem. Exit 1 when something needed is missing."""
    from whisper_ft.workflows.doctor import render, run_checks, usable

    checks = run_checks()
    print(render(checks), flush=True)
    raise typer.Exit(0 if usable(checks) else 1)


@app.command("calibrate")
def calibrate_command(
    audio: list[str] = typer.Argument(None, help="Speech to measure on (a few files, the first 26 s are used): your own language and domain. Default: synthesized English."),
    model_path: str = typer.Option("base", "--model_path", help="Model whose --compute_type auto to measure (any name; converted once)."),
    language: str = typer.Option(None, "--language", help="Language of the audio files (default: detected)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda if present), cpu or cuda."),
    cpu_threads: int = typer.Option(None, "--cpu_threads", min=1, help="CPU threads, as you will decode with (default: up to 4)."),
) -> None:
    """Measure which compute type --compute_type auto uses for a model on this machine (int8, int8_float32, float32; on
    GPU float16, bfloat16, int8_float16): each timed on a packed window of speech, any that changes float32's transcript
    by more than 0.5 points refused; the fastest of the rest is kept for this model, machine and library versions."""
    from whisper_ft.workflows.calibrate import calibrate_model, render_calibration

    print(render_calibration(calibrate_model(model_path, audio, language=language, device=device,
                                             cpu_threads=cpu_threads)), flush=True)

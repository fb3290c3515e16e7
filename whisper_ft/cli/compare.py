"""`whisper-ft compare`: option parsing only; the work is in whisper_ft.workflows.compare."""

from __future__ import annotations

from pathlib import Path

import typer

from whisper_ft.cli import app


@app.command("compare")
def compare_command(
    models: str = typer.Option(..., "--models", help="Comma-separated models, the first is the reference: "
                               "e.g. base,models/whisper-base-finetune (folders: transformers, adapter, CTranslate2); each as [LABEL=]MODEL[@COMPUTE_TYPE], e.g. base,ft=models/ft-ct2@int8 (labels default to the folder's name)."),
    test_data: list[str] = typer.Option(..., "--test_data", help="NAME=MANIFEST.jsonl, or a manifest path "
                                        "(named after its file stem); repeatable."),
    backend: str = typer.Option("hf", "--backend", help="hf (transformers) or ct2 (CTranslate2) for every model."),
    output_dir: Path = typer.Option(Path("reports/compare"), "--output_dir", help="Where report.json, report.md and chart.png go."),
    language: str = typer.Option(None, "--language", help="Force a language (e.g. zh). Default: each utterance's."),
    beam_size: int = typer.Option(1, "--beam_size", help="Beam size. Default 1 (greedy), as eval: several models on several test sets decode several times faster; infer/infer-ct2/serve default to 5."),
    max_new_tokens: int = typer.Option(None, "--max_new_tokens", help="Cap on generated tokens per clip."),
    cpu_threads: int = typer.Option(None, "--cpu_threads", help="CPU threads (default: up to 4)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute_type", help="ct2 only, for every model: int8, float32, ... Default: each model at its stored precision (a CTranslate2 folder as exported); one model's own with MODEL@TYPE in --models."),
    pack: bool = typer.Option(None, "--pack/--no_pack", help="As eval: short same-language clips share 30 s windows (default: on with --backend ct2)."),
    batch_size: int = typer.Option(16, "--batch_size", help="Utterances per batch."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and of the generated non-speech clips."),
    timestamp_clips: int = typer.Option(3, "--timestamp_clips", help="Clips per test set decoded with timestamps and checked."),
    prompt: str = typer.Option(None, "--prompt", help="Text every clip is conditioned on as the previous text (Whisper's initial prompt): names, spelling, style."),
    hotwords: str = typer.Option(None, "--hotwords", help="Words to favour (names, jargon; faster-whisper's hotwords): given to the decoder as previous text, after --prompt."),
    num_beams: int = typer.Option(None, "--num_beams", hidden=True, help="Deprecated: --beam_size."),
) -> None:
    """Compare models on several test sets: CER/WER with bootstrap intervals, hallucinations, timestamps."""
    from whisper_ft.cli.inference import _quiet_libraries, _renamed

    _quiet_libraries()
    beam_size = _renamed("--num_beams", num_beams, "--beam_size", beam_size, new_default=1)
    from whisper_ft.core.console import log
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.core.outputs import removed_if_failed
    from whisper_ft.workflows.compare.inputs import parse_models, parse_test_data
    from whisper_ft.workflows.compare.runner import CompareSettings, run_compare
    from whisper_ft.workflows.compare.writers import check_report_files, format_table, write_compare_report

    settings = CompareSettings(
        models=tuple(parse_models(models)), test_sets=tuple(parse_test_data(test_data)), backend=backend,
        language=language, num_beams=beam_size, max_new_tokens=max_new_tokens, cpu_threads=cpu_threads,
        device=device, compute_type=compute_type, batch_size=batch_size, bootstrap=bootstrap, seed=seed,
        timestamp_clips=timestamp_clips, pack=pack, prompt=prompt, hotwords=hotwords,
    )
    check_report_files(output_dir)  # never replace a report.md (or .json, chart.png) someone else wrote
    with removed_if_failed(output_dir):  # a failed run leaves no empty folder behind
        try:  # before decoding: an unwritable output folder should not cost the whole run
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WhisperFtError(f"cannot create --output_dir {output_dir}: {exc.strerror or exc}") from exc
        report = run_compare(settings)
        paths = write_compare_report(report, output_dir)
    log(f"wrote {paths['json']}, {paths['markdown']} and {paths['chart']}")
    print(format_table(report))

"""`whisper-ft llm finetune|eval|infer`: the speech-LLM recipe (Whisper encoder + projector + causal LM).

Parsing only; the work is in whisper_ft.speech_llm. The finetune options are made from the settings
dataclasses (whisper_ft.speech_llm.config, through whisper_ft.cli.options). Multi-GPU: ``accelerate launch -m whisper_ft llm finetune
...`` or ``torchrun --nproc_per_node N -m whisper_ft llm finetune ...`` (scripts/speech_llm_multi_gpu.sh).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from whisper_ft.cli import app
from whisper_ft.cli.options import OptionalValueCommand, ParsedOptions, options_from
from whisper_ft.speech_llm.config import (
    DecodeSettings,
    LlmDataSettings,
    LlmTrainSettings,
    ModelSettings,
    SpeechLLMConfig,
    default_of,
)

llm_app = typer.Typer(help="Speech-LLM recipe (SLAM-ASR): a frozen Whisper encoder, a trained projector and a "
                           "causal LM (optionally with LoRA).", no_args_is_help=True)
app.add_typer(llm_app, name="llm")

# Settings the command leaves at their defaults (the decoding beam is --eval_num_beams).
NOT_OPTIONS = ("weight_decay", "max_grad_norm", "use_8bit", "kl_to_base", "max_general_regression", "num_beams",
               "repetition_penalty", "tokens_per_second", "extra_tokens")


@llm_app.command("finetune", cls=OptionalValueCommand)
@options_from(ModelSettings, LlmDataSettings, SpeechLLMConfig, LlmTrainSettings, DecodeSettings, skip=NOT_OPTIONS)
def llm_finetune_cmd(options: ParsedOptions) -> None:
    """Train a projector (and optionally LoRA) between a Whisper encoder and a causal LM; best run in OUTPUT_DIR/<run>/best."""
    from whisper_ft.core.console import log
    from whisper_ft.speech_llm.trainer import finetune_speech_llm

    auto_run_name = options["output_dir"] is None  # no folder named: a second run of the same models gets <name>-2
    config = SpeechLLMConfig(
        output_dir=default_of(SpeechLLMConfig, "output_dir") if auto_run_name else options["output_dir"],
        model=options.settings(ModelSettings), data=options.settings(LlmDataSettings),
        train=options.settings(LlmTrainSettings),
        decode=options.settings(DecodeSettings, num_beams=options["eval_num_beams"]),
    )
    result = finetune_speech_llm(config, auto_run_name=auto_run_name)
    if not result.is_main_process:
        raise typer.Exit(130 if result.interrupted else 0)
    if result.best_dir is not None and not result.interrupted:
        m = result.best_metrics or {}
        log(f"done: best {m.get('metric')} {m.get('value', float('nan')):.4f} at step {m.get('step')}; "
            f"evaluate with: whisper-ft llm eval --run {result.best_dir} --test_data {config.data.test_data}")
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    if result.interrupted:
        raise typer.Exit(130)


@llm_app.command("eval")
def llm_eval_cmd(
    run: str = typer.Option(..., "--run", help="Speech-LLM run folder (RUN/best, a checkpoint-N, or RUN itself)."),
    test_data: str = typer.Option("dataset/test.jsonl", "--test_data", help="Manifest to decode and score."),
    metric: str = typer.Option(None, "--metric", help="cer or wer (default: by the test set's main language)."),
    language: str = typer.Option(None, "--language", help="Language for the normaliser (default: each record's)."),
    num_beams: int = typer.Option(None, "--num_beams", help="Beam size (default: the run's, usually 1)."),
    batch_size: int = typer.Option(8, "--batch_size", help="Clips per batch."),
    max_new_tokens: int = typer.Option(None, "--max_new_tokens", help="Cap on generated tokens per clip (besides "
                                                                      "the duration-proportional cap)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cpu_threads: int = typer.Option(None, "--cpu_threads", help="Torch CPU threads."),
    output_dir: str = typer.Option(None, "--output_dir", help="Where report.json and predictions.jsonl go "
                                                              "(default: reports/<run>_<data>_speech-llm/)."),
) -> None:
    """Decode a test manifest with a speech-LLM run and score it (same normaliser and report as `eval`)."""
    from whisper_ft.core.console import log
    from whisper_ft.workflows.llm import evaluate_speech_llm

    report, paths = evaluate_speech_llm(run, test_data, metric=metric, language=language, num_beams=num_beams,
                                        batch_size=batch_size, max_new_tokens=max_new_tokens, device=device,
                                        cpu_threads=cpu_threads, output_dir=output_dir)
    log(f"wrote {paths[0]} and {paths[1]}")
    print(report.summary())


@llm_app.command("infer")
def llm_infer_cmd(
    audio: list[Path] = typer.Argument(..., help="Audio files (any format whisper-ft reads) and/or folders."),
    run: str = typer.Option(..., "--run", help="Speech-LLM run folder (RUN/best, a checkpoint-N, or RUN itself)."),
    num_beams: int = typer.Option(None, "--num_beams", help="Beam size (default: the run's, usually 1)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cpu_threads: int = typer.Option(None, "--cpu_threads", help="Torch CPU threads."),
) -> None:
    """Transcribe audio files with a speech-LLM run: one JSON line per file on stdout; a file that fails is
    listed at the end (exit 1), the others are done."""
    from whisper_ft.workflows.llm import transcribe_files

    def show(path, text):
        print(json.dumps({"audio": str(path), "text": text}, ensure_ascii=False), flush=True)

    done = transcribe_files(run, audio, num_beams=num_beams, device=device, cpu_threads=cpu_threads, on_result=show)
    done.raise_for_failures()

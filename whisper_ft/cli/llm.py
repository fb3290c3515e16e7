"""`whisper-ft llm finetune|eval|infer`: the speech-LLM recipe (Whisper encoder + projector + causal LM).

Parsing only; the work is in whisper_ft.speech_llm. Defaults and help texts come from the settings
dataclasses (whisper_ft.speech_llm.config). Multi-GPU: ``accelerate launch -m whisper_ft llm finetune
...`` or ``torchrun --nproc_per_node N -m whisper_ft llm finetune ...`` (scripts/speech_llm_multi_gpu.sh).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from whisper_ft.cli import app
from whisper_ft.cli.train import _OptionalValueCommand
from whisper_ft.speech_llm.config import (
    DEFAULT_LORA_TARGET,
    DecodeSettings,
    LlmDataSettings,
    LlmTrainSettings,
    ModelSettings,
    SpeechLLMConfig,
    default_of,
    help_of,
)

llm_app = typer.Typer(help="Speech-LLM recipe (SLAM-ASR): a frozen Whisper encoder, a trained projector and a "
                           "causal LM (optionally with LoRA).", no_args_is_help=True)
app.add_typer(llm_app, name="llm")


def _opt(cls, name: str, flag: str, **kwargs):
    return typer.Option(default_of(cls, name), flag, help=help_of(cls, name), **kwargs)


@llm_app.command("finetune", cls=_OptionalValueCommand)
def llm_finetune_cmd(
    encoder: str = _opt(ModelSettings, "encoder", "--encoder"),
    llm: str = typer.Option(..., "--llm", help=help_of(ModelSettings, "llm")),
    llm_gguf: str = _opt(ModelSettings, "llm_gguf", "--llm_gguf"),
    projector: str = _opt(ModelSettings, "projector", "--projector"),
    projector_hidden: int = _opt(ModelSettings, "projector_hidden", "--projector_hidden"),
    prompt: str = _opt(ModelSettings, "prompt", "--prompt"),
    lora_r: int = _opt(ModelSettings, "lora_r", "--lora_r"),
    lora_alpha: float = _opt(ModelSettings, "lora_alpha", "--lora_alpha"),
    lora_dropout: float = _opt(ModelSettings, "lora_dropout", "--lora_dropout"),
    lora_target: str = typer.Option(",".join(DEFAULT_LORA_TARGET), "--lora_target",
                                    help=help_of(ModelSettings, "lora_target")),
    freeze_llm: bool = _opt(ModelSettings, "freeze_llm", "--freeze_llm"),
    train_data: str = _opt(LlmDataSettings, "train_data", "--train_data"),
    test_data: str = _opt(LlmDataSettings, "test_data", "--test_data"),
    language: str = _opt(LlmDataSettings, "language", "--language"),
    min_duration: float = _opt(LlmDataSettings, "min_duration", "--min_duration"),
    max_duration: float = _opt(LlmDataSettings, "max_duration", "--max_duration"),
    cache_encoder_outputs: bool = _opt(LlmDataSettings, "cache_encoder_outputs", "--cache_encoder_outputs"),
    num_workers: int = _opt(LlmDataSettings, "num_workers", "--num_workers"),
    max_eval_samples: int = _opt(LlmDataSettings, "max_eval_samples", "--max_eval_samples"),
    output_dir: str = typer.Option(None, "--output_dir", help=help_of(SpeechLLMConfig, "output_dir")
                                   + f" Default: {default_of(SpeechLLMConfig, 'output_dir')}"),
    overwrite_output_dir: bool = _opt(LlmTrainSettings, "overwrite_output_dir", "--overwrite_output_dir"),
    num_train_epochs: float = _opt(LlmTrainSettings, "num_train_epochs", "--num_train_epochs"),
    max_steps: int = _opt(LlmTrainSettings, "max_steps", "--max_steps"),
    learning_rate: float = _opt(LlmTrainSettings, "learning_rate", "--learning_rate"),
    warmup_steps: int = _opt(LlmTrainSettings, "warmup_steps", "--warmup_steps"),
    per_device_train_batch_size: int = _opt(LlmTrainSettings, "per_device_train_batch_size",
                                            "--per_device_train_batch_size"),
    per_device_eval_batch_size: int = _opt(LlmTrainSettings, "per_device_eval_batch_size",
                                           "--per_device_eval_batch_size"),
    gradient_accumulation_steps: int = _opt(LlmTrainSettings, "gradient_accumulation_steps",
                                            "--gradient_accumulation_steps"),
    fp16: bool = _opt(LlmTrainSettings, "fp16", "--fp16"),
    bf16: bool = _opt(LlmTrainSettings, "bf16", "--bf16"),
    gradient_checkpointing: bool = _opt(LlmTrainSettings, "gradient_checkpointing", "--gradient_checkpointing"),
    resume_from_checkpoint: str = typer.Option(
        None, "--resume_from_checkpoint", metavar="[PATH]",
        help="Resume from a checkpoint-N folder; without PATH, the latest checkpoint of this run."),
    eval_steps: int = _opt(LlmTrainSettings, "eval_steps", "--eval_steps"),
    save_steps: int = _opt(LlmTrainSettings, "save_steps", "--save_steps"),
    save_total_limit: int = _opt(LlmTrainSettings, "save_total_limit", "--save_total_limit"),
    logging_steps: int = _opt(LlmTrainSettings, "logging_steps", "--logging_steps"),
    metric_for_best: str = _opt(LlmTrainSettings, "metric_for_best", "--metric_for_best"),
    eval_num_beams: int = _opt(LlmTrainSettings, "eval_num_beams", "--eval_num_beams"),
    eval_on_start: bool = _opt(LlmTrainSettings, "eval_on_start", "--eval_on_start"),
    no_repeat_ngram_size: int = _opt(DecodeSettings, "no_repeat_ngram_size", "--no_repeat_ngram_size"),
    seed: int = _opt(LlmTrainSettings, "seed", "--seed"),
    num_threads: int = _opt(LlmTrainSettings, "num_threads", "--num_threads"),
    deepspeed: str = _opt(LlmTrainSettings, "deepspeed", "--deepspeed"),
) -> None:
    """Train a projector (and optionally LoRA) between a Whisper encoder and a causal LM; best run in OUTPUT_DIR/<run>/best."""
    from whisper_ft.console import log
    from whisper_ft.speech_llm.trainer import finetune_speech_llm

    auto_run_name = output_dir is None  # no folder named: a second run of the same models gets <name>-2
    config = SpeechLLMConfig(
        output_dir=default_of(SpeechLLMConfig, "output_dir") if auto_run_name else output_dir,
        model=ModelSettings(encoder=encoder, llm=llm, llm_gguf=llm_gguf, projector=projector,
                            projector_hidden=projector_hidden, prompt=prompt, lora_r=lora_r, lora_alpha=lora_alpha,
                            lora_dropout=lora_dropout, lora_target=lora_target, freeze_llm=freeze_llm),
        data=LlmDataSettings(train_data=train_data, test_data=test_data, language=language, min_duration=min_duration,
                             max_duration=max_duration, cache_encoder_outputs=cache_encoder_outputs,
                             num_workers=num_workers, max_eval_samples=max_eval_samples),
        train=LlmTrainSettings(
            num_train_epochs=num_train_epochs, max_steps=max_steps, learning_rate=learning_rate,
            warmup_steps=warmup_steps, per_device_train_batch_size=per_device_train_batch_size,
            per_device_eval_batch_size=per_device_eval_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, fp16=fp16, bf16=bf16,
            gradient_checkpointing=gradient_checkpointing, eval_steps=eval_steps, save_steps=save_steps,
            save_total_limit=save_total_limit, logging_steps=logging_steps, metric_for_best=metric_for_best,
            eval_num_beams=eval_num_beams, eval_on_start=eval_on_start, seed=seed, num_threads=num_threads,
            resume_from_checkpoint=resume_from_checkpoint, overwrite_output_dir=overwrite_output_dir,
            deepspeed=deepspeed),
        decode=DecodeSettings(num_beams=eval_num_beams, no_repeat_ngram_size=no_repeat_ngram_size),
    )
    result = finetune_speech_llm(config, auto_run_name=auto_run_name)
    if not result.is_main_process:
        raise typer.Exit(130 if result.interrupted else 0)
    if result.best_dir is not None and not result.interrupted:
        m = result.best_metrics or {}
        log(f"done: best {m.get('metric')} {m.get('value', float('nan')):.4f} at step {m.get('step')}; "
            f"evaluate with: whisper-ft llm eval --run {result.best_dir} --test_data {test_data}")
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
    from whisper_ft.console import log
    from whisper_ft.speech_llm.evaluation import evaluate_speech_llm

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
    from whisper_ft.speech_llm.evaluation import transcribe_files

    def show(path, text):
        print(json.dumps({"audio": str(path), "text": text}, ensure_ascii=False), flush=True)

    done = transcribe_files(run, audio, num_beams=num_beams, device=device, cpu_threads=cpu_threads, on_result=show)
    done.raise_for_failures()

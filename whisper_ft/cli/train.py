"""`whisper-ft finetune` and `whisper-ft merge`: parse options, call whisper_ft.training / whisper_ft.merge.

Defaults and help texts come from the settings dataclasses (whisper_ft.training.config), so
they live in one place. Multi-GPU: ``accelerate launch -m whisper_ft finetune ...`` or
``torchrun --nproc_per_node N -m whisper_ft finetune ...`` (see scripts/finetune_multi_gpu.sh).
"""

from __future__ import annotations

import json

import typer
from typer.core import TyperCommand

from whisper_ft.cli import app
from whisper_ft.training.config import (
    DEFAULT_TARGET_MODULES,
    DataSettings,
    FinetuneConfig,
    LoraSettings,
    TrainSettings,
    default_of,
    help_of,
)

OPTIONAL_VALUE = {"--resume_from_checkpoint": "latest"}  # option -> value when given bare


class _OptionalValueCommand(TyperCommand):
    """Lets ``--resume_from_checkpoint`` be given without a path (= the latest checkpoint)."""

    def parse_args(self, ctx, args):
        args = list(args)
        for i, arg in enumerate(args):
            if arg in OPTIONAL_VALUE and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args[i] = f"{arg}={OPTIONAL_VALUE[arg]}"
        return super().parse_args(ctx, args)


def _opt(cls, name: str, flag: str, **kwargs):
    """An option whose default and help come from settings dataclass ``cls``."""
    return typer.Option(default_of(cls, name), flag, help=help_of(cls, name), **kwargs)


@app.command("finetune", cls=_OptionalValueCommand)
def finetune_cmd(
    base_model: str = _opt(FinetuneConfig, "base_model", "--base_model"),
    train_data: str = typer.Option(None, "--train_data", help=help_of(DataSettings, "train_data")
                                   + " Default: dataset/train.jsonl."),
    test_data: list[str] = typer.Option(None, "--test_data", metavar="[NAME=]MANIFEST",
                                        help=help_of(DataSettings, "test_data") + " Default: dataset/test.jsonl."),
    output_dir: str = typer.Option(None, "--output_dir", help=help_of(FinetuneConfig, "output_dir")
                                   + f" Default: {default_of(FinetuneConfig, 'output_dir')}"),
    overwrite_output_dir: bool = _opt(TrainSettings, "overwrite_output_dir", "--overwrite_output_dir"),
    language: str = _opt(DataSettings, "language", "--language"),
    task: str = _opt(DataSettings, "task", "--task"),
    timestamps: bool = _opt(DataSettings, "timestamps", "--timestamps"),
    use_adalora: bool = _opt(LoraSettings, "use_adalora", "--use_adalora"),
    lora_r: int = _opt(LoraSettings, "r", "--lora_r"),
    lora_alpha: float = _opt(LoraSettings, "alpha", "--lora_alpha"),
    lora_dropout: float = _opt(LoraSettings, "dropout", "--lora_dropout"),
    adalora_target_r: int = _opt(LoraSettings, "adalora_target_r", "--adalora_target_r"),
    target_modules: str = typer.Option(",".join(DEFAULT_TARGET_MODULES), "--target_modules",
                                       help=help_of(LoraSettings, "target_modules")),
    lora_encoder_layers: int = _opt(LoraSettings, "encoder_layers", "--lora_encoder_layers"),
    num_train_epochs: float = _opt(TrainSettings, "num_train_epochs", "--num_train_epochs"),
    max_steps: int = _opt(TrainSettings, "max_steps", "--max_steps"),
    learning_rate: float = _opt(TrainSettings, "learning_rate", "--learning_rate"),
    warmup_steps: int = _opt(TrainSettings, "warmup_steps", "--warmup_steps"),
    per_device_train_batch_size: int = _opt(TrainSettings, "per_device_train_batch_size",
                                            "--per_device_train_batch_size"),
    per_device_eval_batch_size: int = _opt(TrainSettings, "per_device_eval_batch_size",
                                           "--per_device_eval_batch_size"),
    gradient_accumulation_steps: int = _opt(TrainSettings, "gradient_accumulation_steps",
                                            "--gradient_accumulation_steps"),
    fp16: bool = _opt(TrainSettings, "fp16", "--fp16"),
    bf16: bool = _opt(TrainSettings, "bf16", "--bf16"),
    use_8bit: bool = _opt(TrainSettings, "use_8bit", "--use_8bit"),
    gradient_checkpointing: bool = _opt(TrainSettings, "gradient_checkpointing", "--gradient_checkpointing"),
    augment_config: str = _opt(DataSettings, "augment_config", "--augment_config"),
    resume_from_checkpoint: str = typer.Option(
        None, "--resume_from_checkpoint", metavar="[PATH]",
        help="Resume from a checkpoint-N folder; without PATH, the latest checkpoint of this run.",
    ),
    eval_steps: int = _opt(TrainSettings, "eval_steps", "--eval_steps"),
    save_steps: int = _opt(TrainSettings, "save_steps", "--save_steps"),
    save_total_limit: int = _opt(TrainSettings, "save_total_limit", "--save_total_limit"),
    logging_steps: int = _opt(TrainSettings, "logging_steps", "--logging_steps"),
    metric_for_best: str = _opt(TrainSettings, "metric_for_best", "--metric_for_best"),
    min_duration: float = _opt(DataSettings, "min_duration", "--min_duration"),
    max_duration: float = _opt(DataSettings, "max_duration", "--max_duration"),
    max_eval_samples: int = _opt(DataSettings, "max_eval_samples", "--max_eval_samples"),
    eval_num_beams: int = _opt(TrainSettings, "eval_num_beams", "--eval_num_beams"),
    eval_on_start: bool = _opt(TrainSettings, "eval_on_start", "--eval_on_start"),
    seed: int = _opt(TrainSettings, "seed", "--seed"),
    num_workers: int = _opt(DataSettings, "num_workers", "--num_workers"),
    num_threads: int = _opt(TrainSettings, "num_threads", "--num_threads"),
    deepspeed: str = _opt(TrainSettings, "deepspeed", "--deepspeed"),
    replay_data: str = _opt(DataSettings, "replay_data", "--replay_data"),
    replay_ratio: float = _opt(DataSettings, "replay_ratio", "--replay_ratio"),
    empty_audio_ratio: float = _opt(DataSettings, "empty_audio_ratio", "--empty_audio_ratio"),
    empty_audio_dir: str = _opt(DataSettings, "empty_audio_dir", "--empty_audio_dir"),
    kl_to_base: float = _opt(TrainSettings, "kl_to_base", "--kl_to_base"),
    max_general_regression: float = _opt(TrainSettings, "max_general_regression", "--max_general_regression"),
) -> None:
    """LoRA/AdaLoRA fine-tune a Whisper model on manifests; the best adapter lands in OUTPUT_DIR/<model>/best."""
    from whisper_ft.console import log

    if train_data is None:
        train_data = default_of(DataSettings, "train_data")
        log(f"no --train_data given: using {train_data}")
    if not test_data:
        test_data = default_of(DataSettings, "test_data")
        log(f"no --test_data given: using {test_data}")
    elif len(test_data) == 1:
        test_data = test_data[0]
    auto_run_name = output_dir is None  # no folder named: a second run of this model gets <name>-2
    config = FinetuneConfig(
        base_model=base_model,
        output_dir=default_of(FinetuneConfig, "output_dir") if auto_run_name else output_dir,
        lora=LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=target_modules,
                          encoder_layers=lora_encoder_layers, use_adalora=use_adalora, adalora_target_r=adalora_target_r),
        data=DataSettings(train_data=train_data, test_data=test_data, language=language, task=task,
                          timestamps=timestamps, min_duration=min_duration, max_duration=max_duration,
                          augment_config=augment_config, num_workers=num_workers, max_eval_samples=max_eval_samples,
                          replay_data=replay_data, replay_ratio=replay_ratio, empty_audio_ratio=empty_audio_ratio,
                          empty_audio_dir=empty_audio_dir),
        train=TrainSettings(
            num_train_epochs=num_train_epochs, max_steps=max_steps, learning_rate=learning_rate,
            warmup_steps=warmup_steps, per_device_train_batch_size=per_device_train_batch_size,
            per_device_eval_batch_size=per_device_eval_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, fp16=fp16, bf16=bf16, use_8bit=use_8bit,
            gradient_checkpointing=gradient_checkpointing, eval_steps=eval_steps, save_steps=save_steps,
            save_total_limit=save_total_limit, logging_steps=logging_steps, metric_for_best=metric_for_best,
            eval_num_beams=eval_num_beams, eval_on_start=eval_on_start, seed=seed, num_threads=num_threads,
            resume_from_checkpoint=resume_from_checkpoint, overwrite_output_dir=overwrite_output_dir,
            deepspeed=deepspeed, kl_to_base=kl_to_base, max_general_regression=max_general_regression,
        ),
    )
    from whisper_ft.training.trainer import finetune

    result = finetune(config, auto_run_name=auto_run_name)
    if not result.is_main_process:  # other processes of a multi-GPU run: the main one reports
        raise typer.Exit(130 if result.interrupted else 0)
    if result.interrupted:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        raise typer.Exit(130)
    if result.best_dir is not None:
        m = result.best_metrics or {}
        log(f"done: best {m.get('metric')} {m.get('value', float('nan')):.4f} at step {m.get('step')}; "
            f"merge with: whisper-ft merge --lora_model {result.best_dir}")
    print(json.dumps(result.to_dict(), ensure_ascii=False))


@app.command("merge")
def merge_cmd(
    lora_model: str = typer.Option(
        None, "--lora_model", help="Adapter folder (e.g. models/whisper-base/best); default: the newest models/*/best."
    ),
    output_dir: str = typer.Option("models/", "--output_dir", help="The merged model goes to OUTPUT_DIR/<base>-finetune."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights of the merged model: float32, float16 or bfloat16."),
    force: bool = typer.Option(False, "--force", help="Replace the merged folder if it is a model whisper-ft wrote (never an adapter, a run or other files)."),
    scale: float = typer.Option(
        1.0, "--scale", help="Multiply the adapter's update (0 < scale <= 2): below 1 interpolates toward the base "
        "model (less forgetting, less of the new domain; WiSE-FT)."
    ),
) -> None:
    """Merge a LoRA adapter into its base model: a standalone transformers Whisper folder."""
    from whisper_ft.console import log
    from whisper_ft.merge import merge_lora, newest_adapter

    if lora_model is None:
        lora_model = str(newest_adapter())
        log(f"no --lora_model given: using the newest adapter, {lora_model}")
    result = merge_lora(lora_model, output_dir, dtype=dtype, force=force, scale=scale)
    log(f"merged model written to {result.output_dir}")
    print(result.output_dir)

"""`whisper-ft finetune` and `whisper-ft merge`: parse options, call whisper_ft.training / whisper_ft.workflows.merge.

The options are made from the settings dataclasses (whisper_ft.training.config, through
whisper_ft.cli.options), so each is defined once, in its field. Multi-GPU: ``accelerate launch -m
whisper_ft finetune ...`` or ``torchrun --nproc_per_node N -m whisper_ft finetune ...`` (see
scripts/finetune_multi_gpu.sh).
"""

from __future__ import annotations

import json

import typer

from whisper_ft.cli import app
from whisper_ft.cli.options import OptionalValueCommand, ParsedOptions, options_from
from whisper_ft.training.config import DataSettings, FinetuneConfig, LoraSettings, TrainSettings, default_of

NOT_OPTIONS = ("weight_decay", "max_grad_norm", "timestamp_fraction")  # settings the command leaves at their defaults


@app.command("finetune", cls=OptionalValueCommand)
@options_from(FinetuneConfig, DataSettings, LoraSettings, TrainSettings, skip=NOT_OPTIONS)
def finetune_cmd(options: ParsedOptions) -> None:
    """Fine-tune a Whisper model on manifests (LoRA, AdaLoRA or every weight: --method); the best adapter or model lands in OUTPUT_DIR/<model>/best."""
    from whisper_ft.core.console import log
    from whisper_ft.training.trainer import finetune

    auto_run_name = options["output_dir"] is None  # no folder named: a second run of this model gets <name>-2
    config = options.settings(
        FinetuneConfig, output_dir=default_of(FinetuneConfig, "output_dir") if auto_run_name else options["output_dir"],
        data=options.settings(DataSettings), lora=options.settings(LoraSettings), train=options.settings(TrainSettings))

    push_to = config.train.push_to_hub
    if push_to is not None:
        from whisper_ft.workflows.publish import check_push_target

        check_push_target(push_to)
    result = finetune(config, auto_run_name=auto_run_name)
    if not result.is_main_process:  # other processes of a multi-GPU run: the main one reports
        raise typer.Exit(130 if result.interrupted else 0)
    if result.interrupted:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        raise typer.Exit(130)
    if result.best_dir is not None:
        m = result.best_metrics or {}
        then = (f"a whole model: use it directly, e.g. whisper-ft convert --model {result.best_dir}"
                if config.method == "full" else f"merge with: whisper-ft merge --lora_model {result.best_dir}")
        log(f"done: best {m.get('metric')} {m.get('value', float('nan')):.4f} at step {m.get('step')}; {then}")
    summary = result.to_dict()
    if push_to is not None and result.best_dir is not None:
        from whisper_ft.workflows.publish import push_folder

        pushed = push_folder(result.best_dir, push_to)
        log(f"pushed {pushed.files} files of {result.best_dir} to {pushed.url}")
        summary["pushed"] = pushed.to_dict()
    print(json.dumps(summary, ensure_ascii=False))


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
    push_to_hub: str = typer.Option(None, "--push_to_hub", metavar="REPO_ID", help="Then upload the merged model "
                                    "to this hub repository (token: HF_TOKEN or `hf auth login`; see `whisper-ft push`)."),
) -> None:
    """Merge a LoRA adapter into its base model: a standalone transformers Whisper folder."""
    from whisper_ft.core.console import log
    from whisper_ft.workflows.merge import merge_lora, newest_adapter

    if lora_model is None:
        lora_model = str(newest_adapter())
        log(f"no --lora_model given: using the newest adapter, {lora_model}")
    if push_to_hub is not None:
        from whisper_ft.workflows.publish import check_push_target

        check_push_target(push_to_hub)
    result = merge_lora(lora_model, output_dir, dtype=dtype, force=force, scale=scale)
    log(f"merged model written to {result.output_dir}")
    print(result.output_dir)
    if push_to_hub is not None:
        from whisper_ft.workflows.publish import push_folder

        pushed = push_folder(result.output_dir, push_to_hub)
        log(f"pushed {pushed.files} files to {pushed.url}")

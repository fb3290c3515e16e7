"""The run skeleton both recipes share, once a recipe built its model and samples: the Trainer's
arguments (:func:`training_arguments`) and the run itself (:func:`run_training`: the earlier run
removed, the previous best, the callbacks, the run config, train, report). A recipe brings only
its model, its samples and its best-model rule (a :class:`~whisper_ft.trainkit.callbacks.KeepBest`),
so both get the same interrupt/resume behaviour."""

from __future__ import annotations

from pathlib import Path

from whisper_ft.trainkit.dist import log_main
from whisper_ft.trainkit.run import FinetuneResult, remove_earlier_run, train_and_report


def training_arguments(train, run_dir: Path, metric: str, *, use_cpu: bool, num_workers: int, seq2seq: bool = False,
                       **overrides):
    """The Trainer's arguments from the shared :class:`~whisper_ft.trainkit.settings.TrainSettings`;
    ``overrides``: what a recipe sets differently."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    from whisper_ft.trainkit.settings import check_reporter

    check_reporter(train.report_to)
    values = dict(
        output_dir=str(run_dir), num_train_epochs=train.num_train_epochs, max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate, lr_scheduler_type="linear", warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps, fp16=train.fp16, bf16=train.bf16,
        use_cpu=use_cpu, eval_strategy="steps", eval_steps=train.eval_steps, eval_on_start=train.eval_on_start,
        save_strategy="steps", save_steps=train.save_steps, save_total_limit=train.save_total_limit,
        metric_for_best_model=metric, greater_is_better=False, logging_steps=train.logging_steps,
        logging_first_step=True, report_to=[] if train.report_to == "none" else [train.report_to], seed=train.seed,
        dataloader_num_workers=num_workers, dataloader_pin_memory=not use_cpu,
        remove_unused_columns=False,  # the items carry a key (and language) the collators drop
        label_names=["labels"],
        prediction_loss_only=True,  # the loss pass; each recipe's evaluation_loop adds the decoding metrics
        ddp_find_unused_parameters=False,  # frozen base: every trainable weight (adapters, projector) is used
        deepspeed=train.deepspeed, log_level="warning",
        disable_tqdm=False,  # our ProgressBar replaces the default one (PrinterCallback would use stdout)
    )
    values.update(overrides)
    return (Seq2SeqTrainingArguments if seq2seq else TrainingArguments)(**values)


def run_training(trainer, *, run_dir: Path, config_file: str, run_config: dict, train, checkpoint: Path | None,
                 best, callbacks=(), n_utterances: int, threads: int, best_marker: str,
                 ignore_warnings: tuple[str, ...] = ()) -> FinetuneResult:
    """The run, once the recipe built its Trainer: the earlier run removed (``--overwrite_output_dir``,
    only now that every check passed), ``best`` (a :class:`~whisper_ft.trainkit.callbacks.KeepBest`)
    told the best value of the run it resumes, the callbacks added (progress bar, best/, Ctrl-C,
    ``callbacks``, then the checkpoint marker: after every file), the run config written, then
    :func:`train_and_report`."""
    from transformers.trainer_callback import ProgressCallback

    from whisper_ft.core.memory import release_large_buffers
    from whisper_ft.models.output_dir import write_json
    from whisper_ft.trainkit.callbacks import CheckpointComplete, GracefulInterrupt, ProgressBar, previous_best_value
    from whisper_ft.trainkit.settings import METRICS_FILE

    release_large_buffers()  # a step's activations are given back when freed, not kept in a fragmenting heap
    if train.overwrite_output_dir:
        remove_earlier_run(run_dir)
    if checkpoint is not None:
        best.best = previous_best_value(run_dir / "best", best.metric)
    interrupt = GracefulInterrupt()
    trainer.remove_callback(ProgressCallback)  # ours writes to stderr and shows loss/lr
    for cb in [ProgressBar(), best, interrupt, *callbacks, CheckpointComplete()]:
        trainer.add_callback(cb)
    if trainer.is_world_process_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / config_file, run_config)
    log_main(f"training {n_utterances} utterances, {threads} threads, run folder {run_dir}"
             + (f", resuming from {checkpoint}" if checkpoint else ""))
    return train_and_report(trainer, interrupt, run_dir=run_dir, checkpoint=checkpoint, best_marker=best_marker,
                            best_metrics=best.best_metrics, metrics_file=METRICS_FILE,
                            ignore_warnings=ignore_warnings)

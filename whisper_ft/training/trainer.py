"""Fine-tune Whisper (LoRA, AdaLoRA or every weight): :func:`finetune` goes from manifests to ``best/``.

Read :func:`finetune` top to bottom; every step is one call:

1. threads, seed, hardware options (``--use_8bit`` without CUDA fails here);
2. every manifest checked completely (missing audio, languages, durations) with counts: the
   training data, the ``--replay_data`` and each ``--test_data`` set;
3. the base model resolved (a bad name fails here), its tokenizer turns transcripts into labels
   (over-long labels dropped and counted) -- all before any weights are loaded; the training
   samples are joined by the replay pool and the non-speech samples (``training_mix``: each a
   share of every epoch), and the evaluation sets get their metrics (the first ranks ``best/``,
   the others may bound it: ``--max_general_regression``);
4. the base model loaded (SDPA), LoRA/AdaLoRA adapters added (base frozen), or with
   ``--method full`` every weight trainable (``--freeze_encoder``: the decoder's) and, for
   ``--kl_to_base``, a frozen copy of the base beside it;
5. a Hugging Face ``Seq2SeqTrainer`` (subclassed for the length-grouped sampler with the replay
   draw, the ``--kl_to_base`` term of the loss, and the decoding evaluation of each set) with
   callbacks for AdaLoRA, ``best/`` (bounded by the general sets), Ctrl-C and the progress bar;
6. train; the first Ctrl-C saves a resumable checkpoint and stops.

Run folder ``output_dir/<model-name>/`` (a new run never goes into one that holds a run: refused,
or ``<model-name>-2`` ... when no output folder was named; see ``trainkit.run.claim_run_dir``):
``checkpoint-N/`` (resumable once marked complete; also a loadable adapter or model),
``best/`` (adapter, or with ``--method full`` a whole model, + processor + ``finetune_config.json`` +
``metrics.json`` with every set's scores + a ``README.md`` model card), ``runs/`` (TensorBoard, or
``--report_to``), ``finetune_config.json`` and, with ``--max_general_regression``,
``base_metrics.json`` (the base model's step-0 scores the bound refers to).
"""

from __future__ import annotations

import math
from pathlib import Path

from transformers import Seq2SeqTrainer

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.training.callbacks import ADALORA_PATTERN_FILE
from whisper_ft.training.config import CONFIG_FILE, FinetuneConfig, TrainSettings
from whisper_ft.trainkit.dist import is_main_process, local_rank, log_main, world_size
from whisper_ft.trainkit.run import FinetuneResult as FinetuneResult
from whisper_ft.trainkit.run import claim_run_dir
from whisper_ft.trainkit.run import configure_threads as configure_threads
from whisper_ft.trainkit.run import resolve_checkpoint as resolve_checkpoint
from whisper_ft.trainkit.sampler import DurationGroupedSampler
from whisper_ft.trainkit.settings import check_reporter
from whisper_ft.trainkit.skeleton import run_training
from whisper_ft.trainkit.skeleton import training_arguments as shared_training_arguments
from whisper_ft.trainkit.workers import WorkersIgnoreJobSignals


class WhisperLoraTrainer(WorkersIgnoreJobSignals, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` with a length-grouped sampler and an evaluation that really decodes.

    ``evaluate()`` computes the teacher-forced loss as usual, then transcribes the evaluation
    set with ``generate`` (prompt tokens only) and adds ``eval_cer`` / ``eval_wer``; the
    Trainer's logging, best-metric tracking and callbacks all see those metrics. Its DataLoader
    workers ignore the signals a job runner sends to the whole process group (trainkit.workers).
    """

    def __init__(self, *args, processor, task: str, eval_num_beams: int, max_eval_samples: int | None,
                 kl_to_base: float = 0.0, reference_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.processor = processor
        self.task = task
        self.eval_num_beams = eval_num_beams
        self.max_eval_samples = max_eval_samples
        self.kl_to_base = kl_to_base
        # A full fine-tune's --kl_to_base reference: the frozen base, on the training device.
        self.reference_model = reference_model.to(self.args.device) if reference_model is not None else None
        self._loss_parts: list[tuple] = []  # (cross-entropy, KL) of the training batches since the last log
        # Whisper's forward takes **kwargs, so the Trainer would assume it normalises the loss by
        # `num_items_in_batch` itself and skip dividing by the accumulation steps. It does not (mean
        # cross-entropy per batch): let the Trainer average over accumulation steps as usual.
        self.model_accepts_loss_kwargs = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints of an AdaLoRA run keep full-rank tensors (pruned singular values are zero) so
        the optimizer state still fits them on resume; the rank pattern is saved beside them.

        (peft would cut the tensors to the current ranks, which a resumed run cannot load.)
        """
        config = getattr(self.model, "peft_config", {}).get("default")  # None: a full fine-tune
        pattern = getattr(config, "rank_pattern", None)
        if not pattern:
            return super().save_model(output_dir, _internal_call)
        config.rank_pattern = None
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            config.rank_pattern = pattern
        if self.args.should_save:
            from whisper_ft.models.output_dir import write_json

            write_json(Path(output_dir or self.args.output_dir) / ADALORA_PATTERN_FILE, pattern)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return DurationGroupedSampler(dataset.durations, self.args.per_device_train_batch_size, seed=self.args.seed,
                                      draws=getattr(dataset, "draws", ()))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy; with ``--kl_to_base W`` (training only) + W * KL(base || tuned) on the label tokens."""
        if not (self.kl_to_base and model.training):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from whisper_ft.training.forgetting import kl_to_base

        outputs = model(**inputs)
        base_logits = None
        if self.reference_model is not None:
            import torch

            with torch.no_grad(), self.accelerator.autocast():
                base_logits = self.reference_model(**inputs).logits
        kl = kl_to_base(self.accelerator.unwrap_model(model), inputs, outputs.logits, base_logits)
        loss = outputs.loss + self.kl_to_base * kl
        self._loss_parts.append((outputs.loss.detach(), kl.detach()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._loss_parts:  # what the reported loss is made of
            import torch

            ce, kl = (torch.stack(x).mean().item() for x in zip(*self._loss_parts))
            logs["ce_loss"], logs["kl_to_base"] = round(ce, 4), round(kl, 6)
            self._loss_parts = []
        super().log(logs, *args, **kwargs)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        from whisper_ft.training.evaluation import evaluate_by_decoding

        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        scored = evaluate_by_decoding(
            self.model, self.processor, dataloader.dataset, task=self.task,
            batch_size=self.args.per_device_eval_batch_size, num_beams=self.eval_num_beams,
            max_samples=self.max_eval_samples, num_workers=self.args.dataloader_num_workers,
            accelerator=self.accelerator,
        )
        for name, value in scored.metrics().items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        output.metrics[f"{metric_key_prefix}_decoded"] = scored.n_utterances
        if self.is_world_process_zero():
            for ref, hyp in scored.examples[:2]:
                log_main(f"  ref: {ref}\n  hyp: {hyp}")
        return output


def planned_optimizer_steps(n_samples: int, train: TrainSettings, n_processes: int) -> int:
    """Optimizer steps of the run, computed like the Trainer does (used to size AdaLoRA's schedule;
    the callback re-checks it against the Trainer's own number at the start of training)."""
    if train.max_steps:
        return train.max_steps
    batches = math.ceil(math.ceil(n_samples / train.per_device_train_batch_size) / n_processes)
    per_epoch = max(1, math.ceil(batches / train.gradient_accumulation_steps))
    return math.ceil(train.num_train_epochs * per_epoch)


def prompt_plan(data, train_samples, tokenizer):
    """``--prompt_ratio``/``--prompt_terms``: which training samples get a text prompt, and from
    what (see :class:`~whisper_ft.training.data.PromptPlan`); said on stderr."""
    from whisper_ft.data.terms import read_terms
    from whisper_ft.training.data import PromptPlan, link_previous_texts
    from whisper_ft.training.labels import encode_text

    if data.prompt_ratio <= 0:
        return PromptPlan()
    with_previous = link_previous_texts(train_samples)
    terms = read_terms(data.prompt_terms) if data.prompt_terms else []
    plan = PromptPlan(data.prompt_ratio, tuple(tuple(ids) for ids in encode_text(tokenizer, terms) if ids))
    log_main(f"prompts: {data.prompt_ratio:.0%} of training samples are decoded after a text prompt: the previous "
             f"utterance of the same folder ({with_previous} of {len(train_samples)} have one)"
             + (f" or up to {plan.max_terms} of {len(plan.terms)} terms of {data.prompt_terms}" if plan.terms else "")
             + "; the loss covers the transcript only")
    return plan


def check_checkpoint_matches(checkpoint: Path, config: FinetuneConfig) -> None:
    """A checkpoint must hold what the run trains: the adapter type and rank, or a whole model."""
    import json

    has_adapter = (checkpoint / "adapter_config.json").is_file()
    if config.method == "full" or not has_adapter:
        if config.method != "full" or has_adapter:
            held = "a LoRA adapter" if has_adapter else "a fully fine-tuned model (--method full)"
            raise WhisperFtError(f"--resume_from_checkpoint {checkpoint}: it holds {held}, this run is --method "
                                 f"{config.method}; resume with the run's own --method")
        return
    cfg = json.loads((checkpoint / "adapter_config.json").read_text())
    want = "ADALORA" if config.lora.use_adalora else "LORA"
    rank = cfg.get("init_r") if want == "ADALORA" else cfg.get("r")
    if cfg.get("peft_type") != want or rank != config.lora.r:
        raise WhisperFtError(
            f"--resume_from_checkpoint {checkpoint}: it holds a {cfg.get('peft_type')} adapter of rank {rank}, "
            f"this run asks for {want} rank {config.lora.r}; use the same --use_adalora/--lora_r"
        )


def training_arguments(config: FinetuneConfig, run_dir: Path, metric: str, *, use_cpu: bool):
    """The shared Trainer arguments (trainkit.run), Seq2Seq's, with the base scored at step 0 when a bound needs it."""
    t = config.train
    return shared_training_arguments(
        t, run_dir, metric, use_cpu=use_cpu, num_workers=config.data.num_workers, seq2seq=True,
        eval_on_start=t.eval_on_start or t.max_general_regression is not None,  # the bound needs the base's scores
        predict_with_generate=False,
    )


def finetune(config: FinetuneConfig, *, callbacks=(), auto_run_name: bool = False) -> FinetuneResult:
    """Fine-tune ``config.base_model`` on ``config.data``; see the module docstring.

    ``auto_run_name``: the user named no output folder, so a run folder that already holds a run
    gets a fresh sibling (``<name>-2``) instead of a refusal."""
    import torch
    from transformers import set_seed

    from whisper_ft.models.generation import allow_empty_transcript
    from whisper_ft.training.augment import load_augmenter
    from whisper_ft.training.callbacks import BASE_METRICS_FILE, AdaLoraCallback, BestModelCallback
    from whisper_ft.training.data import SpeechCollator, SpeechDataset, build_samples
    from whisper_ft.training.forgetting import build_eval_sets, check_eval_sets, training_mix
    from whisper_ft.training.labels import LabelBuilder
    from whisper_ft.training.model import (
        add_adapters,
        base_hub_id,
        check_hardware,
        frozen_reference,
        load_base_for_training,
        load_processor,
        prepare_full_model,
        resolve_base_model,
    )
    from whisper_ft.trainkit.manifest import check_manifest

    data, train = config.data, config.train
    # Before anything loads: a second run never mixes its checkpoints and best/ into the first's.
    run_dir = claim_run_dir(config.run_dir, config_file=CONFIG_FILE, resume=train.resume_from_checkpoint,
                            overwrite=train.overwrite_output_dir, explicit=not auto_run_name)

    # 1. Environment.
    threads = configure_threads(train.num_threads)
    set_seed(train.seed)
    check_hardware(train)
    check_reporter(train.report_to)
    log_main(f"method {config.method}, learning rate {train.learning_rate:g}"
             + (" (the default for this method; --learning_rate sets another)"
                if getattr(config, "learning_rate_defaulted", False) else ""))
    use_cpu = not torch.cuda.is_available()
    n_procs = world_size()

    # 2. Data: every manifest (training, replay, each evaluation set) checked before any model is touched.
    limits = {"min_duration": data.min_duration, "max_duration": data.max_duration}
    train_pairs, train_report = check_manifest(data.train_data, name="train", language=data.language, **limits)
    replay_pairs, replay_report = (
        check_manifest(data.replay_data, name="replay", language=None, fallback_language=data.language, **limits)
        if data.replay_data else ([], None))
    checked_eval_sets = check_eval_sets(data)
    augmenter = load_augmenter(data.augment_config)
    checkpoint = resolve_checkpoint(train.resume_from_checkpoint, run_dir)
    if checkpoint is not None:
        check_checkpoint_matches(checkpoint, config)
        if train.max_general_regression is not None and not (run_dir / BASE_METRICS_FILE).is_file():
            raise WhisperFtError(f"--max_general_regression: {run_dir / BASE_METRICS_FILE} (the base model's step-0 "
                                 "scores) is missing, so the run cannot be resumed with this bound")

    # 3. Base model resolved; its tokenizer makes the labels. Replay samples and the non-speech
    #    samples of --empty_audio_ratio join the training samples (a share of each epoch).
    base = resolve_base_model(config.base_model)
    log_main(f"base model: {base.source.describe()}")
    processor = load_processor(base)
    builder = LabelBuilder.from_tokenizer(processor.tokenizer, data.task)
    train_samples = build_samples(train_pairs, train_report, processor.tokenizer, builder, timestamps=data.timestamps)
    log_main(train_report.summary())
    replay_samples = []
    if replay_report is not None:
        replay_samples = build_samples(replay_pairs, replay_report, processor.tokenizer, builder,
                                       timestamps=data.timestamps)
        log_main(replay_report.summary())
    mix = training_mix(train_samples, replay_samples, replay_ratio=data.replay_ratio,
                       empty_ratio=data.empty_audio_ratio, seed=train.seed, empty_audio_dir=data.empty_audio_dir)
    if mix.n_replay or mix.n_empty:
        log_main(mix.summary())
    eval_sets = build_eval_sets(checked_eval_sets, train.metric_for_best, processor.tokenizer, builder, log=log_main)
    if data.timestamps:
        n = sum(1 for s in train_samples if s.segments)
        log_main(f"timestamps: {n} of {len(train_samples)} training utterances have sentence times; about "
                 f"{data.timestamp_fraction:.0%} of those are trained with timestamp tokens each epoch")
    domain = eval_sets[0]
    metric = domain.key()
    bounds = {s.key(): train.max_general_regression for s in eval_sets[1:]} if train.max_general_regression is not None else {}
    log_main(f"best checkpoint chosen by {metric}"
             + ("" if train.metric_for_best else f" (the default for {domain.language})")
             + (f", among those within {train.max_general_regression:g} points of the base model on "
                f"{', '.join(bounds)} (scored at step 0)" if bounds else ""))

    # 4. Model: frozen base + adapters, or every weight (a frozen copy beside it for --kl_to_base).
    full = config.method == "full"
    total_steps = _planned_steps(mix.per_epoch, train, n_procs, checkpoint)
    model = load_base_for_training(base, train, device_index=local_rank(), full=full)
    if mix.n_empty and allow_empty_transcript(model.generation_config, processor.tokenizer):
        # Saved with every best/ adapter (and so with merged and converted models): see the helper.
        log_main("--empty_audio_ratio: the model may answer non-speech with an empty transcript "
                 "(<|endoftext|> allowed as its first token)")
    reference = None
    if full:
        reference = frozen_reference(model, train) if train.kl_to_base else None
        model = prepare_full_model(model, freeze_encoder=config.freeze_encoder)
    else:
        model = add_adapters(model, config.lora, recorded_name=base.recorded_name, total_steps=total_steps)

    # 5. Datasets and the Trainer.
    prompts = prompt_plan(data, train_samples, processor.tokenizer)
    train_ds = SpeechDataset(mix.samples, builder, processor.feature_extractor, training=True, seed=train.seed,
                             timestamp_fraction=data.timestamp_fraction, augmenter=augmenter, draws=mix.draws,
                             prompts=prompts)
    eval_datasets = {s.name: SpeechDataset(s.samples, builder, processor.feature_extractor, training=False,
                                           seed=train.seed) for s in eval_sets}
    run_config = {
        **config.to_dict(),
        "resolved": {"base_model": base.recorded_name, "hf_path": str(base.hf_path), "metric_for_best": metric,
                     "train_utterances": len(train_samples), "train_hours": round(train_report.hours, 4),
                     "train_languages": dict(train_report.languages.most_common()),
                     "base_hub_id": base_hub_id(base), "replay_per_epoch": mix.n_replay,
                     "empty_audio_per_epoch": mix.n_empty,
                     "test_utterances": {s.name or "test": len(s.samples) for s in eval_sets},
                     "num_threads": threads, "world_size": n_procs},
    }
    if checkpoint is None and bounds and (run_dir / BASE_METRICS_FILE).is_file() and is_main_process():
        (run_dir / BASE_METRICS_FILE).unlink()  # an earlier run's: this run scores its own base at step 0
    best_cb = BestModelCallback(run_dir / "best", metric, processor, run_config,
                                set_prefixes=tuple(f"eval_{s.name}" if s.name else "eval" for s in eval_sets),
                                bounds=bounds, base_metrics_file=run_dir / BASE_METRICS_FILE)
    trainer = WhisperLoraTrainer(
        model=model,
        args=training_arguments(config, run_dir, metric, use_cpu=use_cpu),
        train_dataset=train_ds,
        eval_dataset=eval_datasets[None] if None in eval_datasets else eval_datasets,
        data_collator=SpeechCollator(builder.sot, sot_prev=builder.sot_prev),  # float32 features; AMP autocasts them
        processor=processor,
        task=data.task,
        eval_num_beams=train.eval_num_beams,
        max_eval_samples=data.max_eval_samples,
        kl_to_base=train.kl_to_base,
        reference_model=reference,
    )

    # 6. Train (trainkit.run: callbacks, run config, Ctrl-C). AdaLoRA modules whose rank was cut to 0
    #    are saved as empty tensors, which peft mistakes for un-gathered ZeRO-3/FSDP shards.
    recipe_callbacks = [AdaLoraCallback(resumed_from=checkpoint)] if config.lora.use_adalora else []
    return run_training(trainer, run_dir=run_dir, config_file=CONFIG_FILE, run_config=run_config, train=train,
                        checkpoint=checkpoint, best=best_cb, callbacks=[*recipe_callbacks, *callbacks],
                        n_utterances=len(train_samples), threads=threads,
                        best_marker="config.json" if full else "adapter_config.json",
                        ignore_warnings=(".*LoRA tensor.*have invalid shape.*",))


def _planned_steps(n_samples: int, train: TrainSettings, n_processes: int, checkpoint: Path | None) -> int:
    """The run's optimizer steps; a resumed run keeps the checkpoint's (AdaLoRA's schedule depends on it)."""
    if checkpoint is not None:
        import json

        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if state.get("max_steps"):
            return int(state["max_steps"])
    return planned_optimizer_steps(n_samples, train, n_processes)

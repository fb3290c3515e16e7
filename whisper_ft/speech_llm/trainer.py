"""Train the speech-LLM recipe: :func:`finetune_speech_llm` goes from manifests to ``best/``.

Read :func:`finetune_speech_llm` top to bottom; every step is one call:

1. threads, seed; both manifests checked (missing audio, durations) with counts; the checkpoint to
   resume from (if any) found and checked against this run's model settings;
2. the encoder and the LLM resolved and checked (not a Whisper model, LLM not found, no tokenizer,
   unreadable GGUF: one clear error) -- before any weights are loaded;
3. the model built: frozen encoder, seeded projector, frozen LLM (+ LoRA);
4. with ``--cache_encoder_outputs``, every clip encoded once into ``RUN/encoder_cache/``;
5. a Hugging Face ``Trainer`` (subclassed: duration-grouped sampler, run-folder checkpoints that
   hold only the projector + LoRA, an evaluation that really decodes and scores with the shared
   normaliser) with callbacks for ``best/``, Ctrl-C and the progress bar; train.

The Trainer brings resumable checkpoints (optimizer, scheduler, RNG, data position), gradient
accumulation, mixed precision, and ``accelerate launch`` / ``torchrun`` / DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.speech_llm.config import CONFIG_FILE, SpeechLLMConfig
from whisper_ft.trainkit.callbacks import KeepBest
from whisper_ft.trainkit.dist import is_main_process, log_main, world_size
from whisper_ft.trainkit.run import (
    FinetuneResult,
    claim_run_dir,
    configure_threads,
    resolve_checkpoint,
)
from whisper_ft.trainkit.sampler import DurationGroupedSampler
from whisper_ft.trainkit.skeleton import run_training, training_arguments
from whisper_ft.trainkit.workers import WorkersIgnoreJobSignals, protect_workers

CACHE_DIR = "encoder_cache"


class SpeechLLMTrainer(WorkersIgnoreJobSignals, Trainer):
    """``Trainer`` with a length-grouped sampler, checkpoints of the trained weights only, and an
    evaluation that decodes the test set and adds ``eval_cer`` / ``eval_wer``."""

    def __init__(self, *args, run_config: dict, tokenizer, decode, max_eval_samples: int | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self.llm_tokenizer = tokenizer
        self.decode_settings = decode
        self.max_eval_samples = max_eval_samples
        self.model_accepts_loss_kwargs = False  # forward returns the mean loss of its batch

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return DurationGroupedSampler(dataset.durations, self.args.per_device_train_batch_size, seed=self.args.seed)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """A checkpoint is a run folder: projector + LoRA + config (never the frozen encoder and LLM)."""
        from whisper_ft.speech_llm.io import write_run_files

        if self.args.should_save:
            write_run_files(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir,
                            self.run_config)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        from whisper_ft.speech_llm.io import load_trainable

        load_trainable(self.accelerator.unwrap_model(model if model is not None else self.model), resume_from_checkpoint)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        refs, hyps, langs = self.decode_eval_set(dataloader.dataset)
        from whisper_ft.trainkit.metrics import pooled_error_rates

        cer, wer = pooled_error_rates(refs, hyps, langs)
        output.metrics[f"{metric_key_prefix}_cer"] = cer
        output.metrics[f"{metric_key_prefix}_wer"] = wer
        output.metrics[f"{metric_key_prefix}_decoded"] = len(refs)
        if self.is_world_process_zero():
            for ref, hyp in list(zip(refs, hyps))[:2]:
                log_main(f"  ref: {ref}\n  hyp: {hyp}")
        return output

    def decode_eval_set(self, dataset) -> tuple[list[str], list[str], list[str | None]]:
        """Each process decodes its share (longest first); the texts are gathered in order."""
        import torch
        from torch.utils.data import DataLoader, Subset

        from whisper_ft.speech_llm.data import LlmCollator
        from whisper_ft.speech_llm.decoding import decode_batch

        samples = dataset.samples
        n = len(samples) if self.max_eval_samples is None else min(self.max_eval_samples, len(samples))
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = sorted(range(rank, n, world), key=lambda i: -samples[i].duration)
        loader = protect_workers(DataLoader(Subset(dataset, mine), batch_size=self.args.per_device_eval_batch_size,
                                            shuffle=False, num_workers=self.args.dataloader_num_workers,
                                            collate_fn=LlmCollator()))
        model = self.accelerator.unwrap_model(self.model)
        hyps: list[str] = []
        done = 0
        with torch.autocast(device_type=self.args.device.type, dtype=torch.bfloat16 if self.args.bf16 else torch.float16,
                            enabled=self.args.fp16 or self.args.bf16):
            for batch in loader:
                durations = [samples[i].duration for i in mine[done:done + batch["labels"].shape[0]]]
                hyps += decode_batch(model, self.llm_tokenizer, batch, durations, self.decode_settings)
                done += len(durations)
        pairs = list(zip(mine, hyps))
        if world > 1:
            from accelerate.utils import gather_object

            pairs = gather_object(pairs)
        by_index = dict(pairs)
        order = range(n)
        return ([samples[i].utterance.sentence for i in order], [by_index[i] for i in order],
                [samples[i].language for i in order])


class BestRunCallback(KeepBest):
    """Keeps ``run_dir/best`` = the run folder (projector + LoRA + config) with the best evaluation so far."""

    def save(self, model) -> None:
        from whisper_ft.speech_llm.io import save_run

        save_run(model, self.best_dir, self.run_config, self.best_metrics)


def _check_checkpoint(checkpoint: Path, config: SpeechLLMConfig) -> None:
    from whisper_ft.speech_llm.io import read_run_config

    if not (checkpoint / CONFIG_FILE).is_file():
        raise WhisperFtError(f"--resume_from_checkpoint {checkpoint} is not a speech-LLM checkpoint (no {CONFIG_FILE})")
    saved = read_run_config(checkpoint).get("model", {})
    current = config.to_dict()["model"]
    for key in ("encoder", "llm", "llm_gguf", "projector", "projector_hidden", "prompt", "lora_r", "lora_target"):
        if key in saved and saved[key] != current[key]:
            raise WhisperFtError(f"--resume_from_checkpoint {checkpoint}: it was trained with --{key} {saved[key]!r}, "
                                 f"this run asks for {current[key]!r}; use the same settings to resume")


def finetune_speech_llm(config: SpeechLLMConfig, *, callbacks=(), auto_run_name: bool = False) -> FinetuneResult:
    """Train ``config`` (see the module docstring); returns where ``best/`` and the checkpoints are.

    ``auto_run_name``: no output folder was named, so a run folder that already holds a run gets a
    fresh sibling (``<name>-2``) instead of a refusal (``trainkit.run.claim_run_dir``)."""
    import torch
    from transformers import set_seed

    from whisper_ft.core.languages import default_metric
    from whisper_ft.speech_llm.build import build_speech_llm, check_model_inputs
    from whisper_ft.speech_llm.data import (
        EncoderCache,
        LlmCollator,
        LlmSpeechDataset,
        build_samples,
        check_manifest,
        fill_encoder_cache,
    )

    data, train = config.data, config.train
    # Before anything loads: a second run never mixes its checkpoints and best/ into the first's.
    run_dir = claim_run_dir(config.run_dir, config_file=CONFIG_FILE, resume=train.resume_from_checkpoint,
                            overwrite=train.overwrite_output_dir, explicit=not auto_run_name)

    # 1. Environment, data, checkpoint.
    threads = configure_threads(train.num_threads)
    set_seed(train.seed)
    use_cpu = not torch.cuda.is_available()
    limits = {"language": data.language, "min_duration": data.min_duration, "max_duration": data.max_duration}
    train_pairs, train_report = check_manifest(data.train_data, name="train", **limits)
    test_pairs, test_report = check_manifest(data.test_data, name="test", **limits)
    checkpoint = resolve_checkpoint(train.resume_from_checkpoint, run_dir)
    if checkpoint is not None:
        _check_checkpoint(checkpoint, config)

    # 2. Encoder and LLM checked before any weights load.
    checked = check_model_inputs(config.model)
    log_main(f"encoder: {checked.encoder_source.describe()}; LLM: {checked.llm_source.describe()}")
    train_samples = build_samples(train_pairs, train_report, checked.tokenizer)
    test_samples = build_samples(test_pairs, test_report, checked.tokenizer)
    log_main(train_report.summary())
    log_main(test_report.summary())
    langs = test_report.languages.most_common(1)
    main_language = data.language or (langs[0][0] if langs else None)
    metric = train.metric_for_best or (default_metric(main_language) if main_language else "cer")
    log_main(f"best checkpoint chosen by {metric}")

    # 3. Model (the TrainingArguments come first: they set up the process group and the device).
    args = training_arguments(train, run_dir, metric, use_cpu=use_cpu, num_workers=data.num_workers)
    dtype = torch.float16 if train.fp16 else torch.bfloat16 if train.bf16 else None
    built = build_speech_llm(config.model, checked, dtype=dtype, device=str(args.device), seed=train.seed)
    model = built.model
    if train.gradient_checkpointing:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_trainable = built.resolved["trainable_parameters"]
    log_main(f"prompt: {built.prompt.text!r}; trainable parameters: {n_trainable:,} (projector"
             + (f" + LoRA r={config.model.lora_r})" if config.model.use_lora else ", LLM frozen)"))

    # 4. Encoder outputs cached once (the main process first; the others then find them on disk).
    cache = None
    if data.cache_encoder_outputs:
        cache = EncoderCache(run_dir / CACHE_DIR, built.resolved["encoder"]["fingerprint"],
                             dtype="float16" if dtype is not None else "float32")
        with args.main_process_first(desc="encoder cache"):
            n = fill_encoder_cache(cache, train_samples + test_samples, model.encoder, built.feature_extractor,
                                   batch_size=train.per_device_eval_batch_size, show_progress=is_main_process())
        log_main(f"encoder cache {cache.folder}: {n} clips encoded now, "
                 f"{len(train_samples) + len(test_samples) - n} already there")

    # 5. Trainer.
    run_config = {**config.to_dict(),
                  "resolved": {**built.resolved, "metric_for_best": metric, "train_utterances": len(train_samples),
                               "test_utterances": len(test_samples), "num_threads": threads,
                               "world_size": world_size()}}
    best_cb = BestRunCallback(run_dir / "best", metric, run_config)
    trainer = SpeechLLMTrainer(
        model=model, args=args, data_collator=LlmCollator(),
        train_dataset=LlmSpeechDataset(train_samples, built.feature_extractor, cache),
        eval_dataset=LlmSpeechDataset(test_samples, built.feature_extractor, cache),
        run_config=run_config, tokenizer=built.tokenizer, decode=config.decode,
        max_eval_samples=data.max_eval_samples,
    )
    return run_training(trainer, run_dir=run_dir, config_file=CONFIG_FILE, run_config=run_config, train=train,
                        checkpoint=checkpoint, best=best_cb, callbacks=callbacks, n_utterances=len(train_samples),
                        threads=threads, best_marker=CONFIG_FILE, ignore_warnings=(".*does not have many workers.*",))

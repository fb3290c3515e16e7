"""Generic training machinery shared by the two recipes (``whisper_ft.training``, the Whisper LoRA
recipe, and ``whisper_ft.speech_llm``); it imports neither of them.

- ``settings``  ``setting``/``help_of``/``default_of`` (dataclass fields with help texts) and ``TrainSettings``
- ``sampler``   ``DurationGroupedSampler``: shuffled, duration-grouped, deterministic batch order
- ``dist``      which process this is under torchrun / accelerate launch; ``log_main``
- ``callbacks`` ``GracefulInterrupt`` (Ctrl-C), ``ProgressBar``, ``KeepBest`` (best/), ``previous_best_value``
- ``run``       ``FinetuneResult``, ``configure_threads``, ``claim_run_dir``, ``resolve_checkpoint``
- ``skeleton``  ``training_arguments``, ``run_training``: the run both recipes share around their Trainer
- ``manifest``  ``check_manifest``: every manifest checked (audio, languages, durations) before a model loads
- ``metrics``   ``pooled_error_rates``: per-language CER/WER, edits pooled

Importing this package is cheap; only ``callbacks`` imports transformers.
"""

"""LoRA/AdaLoRA fine-tuning of Whisper (``whisper-ft finetune``).

- ``config``     the run settings: ``FinetuneConfig`` = ``LoraSettings`` + ``DataSettings`` + ``TrainSettings``
- ``data``       manifests -> checked samples -> features/labels in DataLoader workers, sampler, collator
- ``labels``     Whisper label sequences (prompt, leading-space text, timestamps)
- ``augment``    optional speed / volume / noise / shift augmentation from a JSON config
- ``empty_audio`` non-speech samples (silence, noise, hum, or a folder) with an empty transcript
- ``forgetting`` what keeps the base's knowledge: KL to the base, the replay/non-speech mix, named test sets
- ``model``      base model resolution and loading, (Ada)LoRA adapters
- ``callbacks``  AdaLoRA rank updates, best/ folder (Ctrl-C and the progress bar: ``whisper_ft.trainkit``)
- ``evaluation`` decoding + scoring of the test set during training
- ``trainer``    ``finetune(config)``: the whole run, top to bottom

The generic machinery (sampler, process helpers, Ctrl-C, progress bar, ``TrainSettings``) lives in
``whisper_ft.trainkit``, shared with the speech-LLM recipe: import it from there.

Importing this package is cheap; ``finetune`` pulls in torch/transformers when called.
"""

from whisper_ft.training.config import DataSettings, FinetuneConfig, LoraSettings, TrainSettings


def finetune(config: FinetuneConfig, **kwargs):
    """Run a fine-tuning (see :func:`whisper_ft.training.trainer.finetune`)."""
    from whisper_ft.training.trainer import finetune as _finetune

    return _finetune(config, **kwargs)


__all__ = ["DataSettings", "FinetuneConfig", "LoraSettings", "TrainSettings", "finetune"]

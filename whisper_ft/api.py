"""The Python API: what the CLI does, as functions (``import whisper_ft`` exposes them lazily).

    import whisper_ft

    model = whisper_ft.load_model("base")                       # any name whisper-ft resolves
    result = model.transcribe("call.wav", language="zh", beam_size=5)
    print(result.text, [(s.start, s.end, s.text) for s in result.segments])

    run = whisper_ft.finetune(whisper_ft.FinetuneConfig(base_model="base"))   # dataset/train.jsonl ...
    merged = whisper_ft.merge(run.best_dir)
    export = whisper_ft.convert(merged.output_dir, "models/my-model-ct2", quantization="int8")
    whisper_ft.push(export.output_dir, "me/my-model-ct2")       # to the Hugging Face hub, with its model card
    report = whisper_ft.evaluate(export.output_dir, "dataset/test.jsonl", backend="ct2")
    print(report.summary())

Every function takes the CLI's option names as keyword arguments and raises
:class:`whisper_ft.core.errors.WhisperFtError` (one line: what is wrong, how to fix it) where the CLI
prints ``error:``. Nothing heavy is imported until a function is called.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from whisper_ft.core.errors import WhisperFtError


class Model:
    """A model opened for decoding: the backend (transformers or CTranslate2) and its name."""

    def __init__(self, backend, name: str):
        self.backend, self.name = backend, name

    @property
    def info(self) -> dict[str, Any]:
        """What was loaded: backend, device, compute type, source folder."""
        return self.backend.info

    def transcribe(self, audio: str | Path | np.ndarray, **options):
        """A :class:`~whisper_ft.core.results.Transcription` (language, duration, segments, text)
        of a file or of 16 kHz mono float32 samples, any length. ``options``: the fields of
        :class:`~whisper_ft.decoding.options.DecodingOptions` (language, task, beam_size,
        temperature, word_timestamps, vad, ...)."""
        from whisper_ft.core.audio import load_audio

        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        return self.backend.transcribe(samples, decoding_options(**options),
                                       source=None if isinstance(audio, np.ndarray) else str(audio))

    def texts(self, audios: list[str | Path | np.ndarray], **options) -> list[str]:
        """One text per short clip (its first 30 s), decoded together in one batch."""
        from whisper_ft.core.audio import load_audio

        samples = [a if isinstance(a, np.ndarray) else load_audio(a) for a in audios]
        opts = decoding_options(**options)
        return self.backend.texts(samples, [opts.language] * len(samples), opts)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.backend.describe() if hasattr(self.backend, 'describe') else ''})"


def decoding_options(**options):
    """:class:`DecodingOptions` from keyword arguments; an unknown one names the valid choices."""
    from whisper_ft.decoding.options import DecodingOptions

    valid = [f.name for f in fields(DecodingOptions)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise WhisperFtError(f"unknown decoding option {unknown[0]!r}; choose from: {', '.join(valid)}")
    return DecodingOptions(**options)


def load_model(name: str = "base", *, backend: str = "auto", device: str = "auto", compute_type: str = "auto",
               threads: int | None = None, calibrate: bool = False) -> Model:
    """Open a model for decoding: a CTranslate2 folder, a merged or transformers folder, a LoRA
    adapter, a hub id, ``base`` (bundled, offline) or a speech-LLM run. ``backend``: auto (CTranslate2
    for a CTranslate2 folder, else transformers), ``transformers``/``hf`` or ``ctranslate2``/``ct2``.
    CTranslate2's ``compute_type="auto"``: measured once per model on this machine and cached (on
    synthesized speech here; ``whisper-ft calibrate --model_path M AUDIO ...`` measures on yours);
    ``calibrate=True`` measures again."""
    import whisper_ft.workflows  # noqa: F401  (the recipes' model folders: a speech-LLM run too)
    from whisper_ft.data.calibration_speech import synthesized_clips
    from whisper_ft.decoding.backend import load_backend

    return Model(load_backend(name, kind=backend, device=device, compute_type=compute_type, threads=threads,
                              calibration_clips=synthesized_clips, calibrate=calibrate), name)


def transcribe(audio: str | Path | np.ndarray, model: str | Model = "base", **options):
    """One file with one model (``load_model`` once and call ``Model.transcribe`` for many)."""
    return (model if isinstance(model, Model) else load_model(model)).transcribe(audio, **options)


def finetune(config=None, **settings):
    """Fine-tune (``whisper-ft finetune``): a :class:`~whisper_ft.training.config.FinetuneConfig`,
    or its top-level fields as keywords; returns the run's
    :class:`~whisper_ft.trainkit.run.FinetuneResult` (``best_dir``, ``best_metrics``, ...)."""
    from whisper_ft.training.config import FinetuneConfig
    from whisper_ft.training.trainer import finetune as run

    if config is None:
        config = FinetuneConfig(**settings)
    elif settings:
        raise WhisperFtError("finetune: give a FinetuneConfig or keyword settings, not both")
    return run(config)


def evaluate(model: str, test_data: str | Path, **settings):
    """Score ``model`` on a manifest (``whisper-ft eval``); returns an
    :class:`~whisper_ft.workflows.evaluate.EvalReport` (``score``, ``utterances``, ``summary()``); write it
    with :func:`whisper_ft.workflows.evaluate.write_report`."""
    from whisper_ft.workflows.evaluate import EvalSettings
    from whisper_ft.workflows.evaluate import evaluate as run

    settings.setdefault("show_progress", False)
    return run(EvalSettings(model=str(model), test_data=test_data, **_beam_size(settings)))


def compare(models: list[str], test_sets: dict[str, str | Path], **settings):
    """Compare models on named test sets (``whisper-ft compare``): the first model is the reference.
    Returns a :class:`~whisper_ft.workflows.compare.runner.CompareReport`."""
    from whisper_ft.workflows.compare.runner import CompareSettings, run_compare

    if not models or not test_sets:
        raise WhisperFtError("compare: give at least one model and one named test set")
    settings.setdefault("show_progress", False)
    return run_compare(CompareSettings(models=tuple(map(str, models)),
                                       test_sets=tuple((n, Path(p)) for n, p in test_sets.items()),
                                       **_beam_size(settings)))


def _beam_size(settings: dict) -> dict:
    """``beam_size`` (the name every command and DecodingOptions use) for the settings records that
    still call it ``num_beams`` (their report.json keys)."""
    if "beam_size" in settings:
        settings["num_beams"] = settings.pop("beam_size")
    return settings


def convert(model: str | Path, output_dir: str | Path, **options):
    """Export to CTranslate2 for faster-whisper (``whisper-ft convert``): ``quantization``,
    ``merge`` (an adapter on the fly), ``force``; returns a ConversionResult."""
    from whisper_ft.models.ct2_export import convert_model

    return convert_model(model, output_dir, **options)


def merge(lora_model: str | Path, output_dir: str | Path = "models/", **options):
    """Merge a LoRA adapter into its base (``whisper-ft merge``): ``dtype``, ``scale``, ``force``;
    returns a MergeResult (``output_dir``)."""
    from whisper_ft.workflows.merge import merge_lora

    return merge_lora(lora_model, output_dir, **options)


def push(model: str | Path, repo_id: str, **options):
    """Upload a model folder with its model card to the Hugging Face hub (``whisper-ft push``):
    ``private``, ``token``, ``commit_message``, ``eval_reports``, ``compare_report``; returns a PushResult."""
    from whisper_ft.workflows.publish import push_folder

    return push_folder(model, repo_id, **options)


def __getattr__(name: str):  # the config classes, imported when first used
    if name == "FinetuneConfig":
        from whisper_ft.training.config import FinetuneConfig

        return FinetuneConfig
    if name == "DecodingOptions":
        from whisper_ft.decoding.options import DecodingOptions

        return DecodingOptions
    raise AttributeError(f"module 'whisper_ft.api' has no attribute {name!r}")

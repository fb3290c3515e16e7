"""whisper-ft: adapt OpenAI Whisper to new speech with LoRA, score it honestly, serve it fast.

The Python API (imported lazily: ``import whisper_ft`` loads nothing heavy)::

    import whisper_ft
    model = whisper_ft.load_model("base")
    print(model.transcribe("a.wav", language="zh").text)

``load_model``, ``transcribe``, ``finetune`` (with ``FinetuneConfig``), ``evaluate``, ``compare``,
``convert``, ``merge``, ``push``; see :mod:`whisper_ft.api`. The command line (``whisper-ft``) is
:mod:`whisper_ft.cli`, which only parses options and calls the same functions.
"""

__version__ = "0.1.0"

__all__ = ["load_model", "transcribe", "finetune", "evaluate", "compare", "convert", "merge", "push", "Model",
           "FinetuneConfig", "DecodingOptions", "WhisperFtError"]


def __getattr__(name: str):
    if name in __all__:
        if name == "WhisperFtError":
            from whisper_ft.core.errors import WhisperFtError

            return WhisperFtError
        from whisper_ft import api

        return getattr(api, name)
    raise AttributeError(f"module 'whisper_ft' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

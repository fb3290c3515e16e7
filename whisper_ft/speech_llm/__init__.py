"""The speech-LLM recipe (SLAM-ASR family): a frozen Whisper encoder, a trainable projector and a
frozen causal LM (optionally with LoRA) that writes the transcript after a chat prompt.

- :mod:`~whisper_ft.speech_llm.config`: the run settings (dataclasses with help texts);
- :mod:`~whisper_ft.speech_llm.encoder`: the Whisper encoder on the real audio length;
- :mod:`~whisper_ft.speech_llm.projector`: k-frame concatenation -> MLP to the LLM width;
- :mod:`~whisper_ft.speech_llm.llm`: finding and loading the LLM (folder, hub id, GGUF) and its prompt;
- :mod:`~whisper_ft.speech_llm.model`: the :class:`SpeechLLM` module (loss, generation);
- :mod:`~whisper_ft.speech_llm.data`: manifests -> features / cached encoder outputs + label ids;
- :mod:`~whisper_ft.speech_llm.trainer`: :func:`finetune_speech_llm` (HF Trainer: resume, Ctrl-C,
  multi-GPU, ``best/`` by decoded CER/WER);
- :mod:`~whisper_ft.speech_llm.decoding`: greedy / beam decoding and the eval backend;
- :mod:`~whisper_ft.speech_llm.io`: the run folder (projector + LoRA + config), saving and loading.

Nothing here imports the Whisper LoRA recipe (``whisper_ft.training``); both recipes share the generic
pieces of ``whisper_ft.trainkit`` (sampler, distributed helpers, settings pattern, Ctrl-C and progress
callbacks, thread and checkpoint helpers, pooled error rates).
"""

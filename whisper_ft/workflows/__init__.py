"""What the commands run: ``evaluate`` (eval), ``compare``, ``convert``, ``merge``, ``inference``
(infer, infer-ct2), ``llm`` (llm eval/infer), ``doctor``. Each opens its models through
:func:`whisper_ft.decoding.backend.load_backend`.

Importing this package registers the recipes' own model folders with the decoding layer (a
speech-LLM run opens as its own backend): ``decoding`` knows no recipe; the recipes register
themselves here, above both.
"""

import whisper_ft.speech_llm.io  # noqa: F401  (registers the speech-LLM run folders)

"""whisper-ft: adapt OpenAI Whisper to new speech with LoRA, score it honestly, serve it fast.

Library layout (one module per stage; the CLI in ``whisper_ft.cli`` only parses and calls these):

- ``whisper_ft.audio``      decode any audio file to 16 kHz mono float32
- ``whisper_ft.manifest``   the JSON Lines utterance manifest (typed records, read/write/validate)
- ``whisper_ft.data``       corpus preparation (AISHELL, Kaldi, JSONL, HF datasets) -> manifests
- ``whisper_ft.models``     model names -> folders (local, bundled, hub), CTranslate2 import
"""

__version__ = "0.1.0"

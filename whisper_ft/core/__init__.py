"""Foundations and building blocks every layer uses; nothing here knows a model.

- ``errors``, ``console``: the one error policy (one-line messages) and stderr logging
- ``audio``: any audio file -> 16 kHz mono float32 (bounded memory, hostile headers refused)
- ``manifest``: the JSON Lines utterance manifest (typed records, atomic writes)
- ``text``, ``numbers``, ``scoring``: the one normaliser and CER/WER with S/D/I
- ``languages``: Whisper's language table; ``results``: typed ``Segment``/``Transcription``
- ``writers``: txt/json/srt/vtt/tsv; ``outputs``: output folders a failed command removes
"""

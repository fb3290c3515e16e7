"""Data preparation: every source -> the same JSON Lines manifest (see :mod:`whisper_ft.core.manifest`).

One module per source (:mod:`.aishell`, :mod:`.kaldi`, :mod:`.jsonl`, :mod:`.hf`, :mod:`.tts` for
espeak-ng synthetic speech, :mod:`.hsk` for HSK sentence texts) on top of
:mod:`.common` (options, parallel probing, skip counting, the report) and :mod:`.archive` (safe
extraction, resumable downloads). Import the source module you need; this package stays light.
"""

from whisper_ft.data.common import PrepareOptions, PrepareReport, SkipReason

__all__ = ["PrepareOptions", "PrepareReport", "SkipReason"]

"""Whisper's vocabulary in one object: special token ids, the prompt, timestamp tokens <-> seconds.

Training labels (:mod:`whisper_ft.training.labels`), the transformers decoder and the CTranslate2
decoder all read token ids from here instead of spelling ``<|startoftranscript|>`` & co. out
themselves. Build it from a transformers tokenizer or a ``tokenizers.Tokenizer``
(:meth:`WhisperVocabulary.from_tokenizer`), or from a CTranslate2 folder's ``tokenizer.json``
(:meth:`WhisperVocabulary.from_tokenizer_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.languages import LANGUAGES
from whisper_ft.models.generation import SPECIAL_TOKENS, TASKS, TIMESTAMP_STEP

MAX_TIMESTAMP = 30.0  # seconds: the last timestamp token, <|30.00|>


@dataclass(frozen=True)
class WhisperVocabulary:
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_prev: int
    no_timestamps: int
    timestamp_begin: int  # <|0.00|>: every id from here on is a timestamp
    has_timestamps: bool  # the tokenizer has <|0.00|> right after <|notimestamps|>
    language_ids: dict[str, int] = field(default_factory=dict, compare=False)  # "zh" -> id of <|zh|>

    @classmethod
    def from_tokenizer(cls, tokenizer, *, where: str | None = None) -> WhisperVocabulary:
        """From anything with ``get_vocab()`` (a transformers tokenizer, a ``tokenizers.Tokenizer``);
        a missing special token is an error naming ``where`` (the tokenizer's file or folder)."""
        vocab = tokenizer.get_vocab()
        ids = {}
        for key, token in SPECIAL_TOKENS.items():
            if token not in vocab:
                raise WhisperFtError(f"{where or 'the tokenizer'} has no {token} token: not a Whisper tokenizer")
            ids[key] = int(vocab[token])
        begin = ids["no_timestamps"] + 1
        languages = {code: int(vocab[f"<|{code}|>"]) for code in LANGUAGES if f"<|{code}|>" in vocab}
        return cls(**ids, timestamp_begin=begin, has_timestamps=vocab.get("<|0.00|>") == begin,
                   language_ids=languages)

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> WhisperVocabulary:
        """From a ``tokenizer.json`` (or the CTranslate2 / transformers folder holding one)."""
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the library's errors name no file
            raise WhisperFtError(f"cannot read {path}: {exc}") from None
        return cls.from_tokenizer(tok, where=str(path))

    def task_id(self, task: str) -> int:
        if task not in TASKS:
            raise WhisperFtError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        return self.translate if task == "translate" else self.transcribe

    def language_id(self, language: str) -> int:
        if language not in self.language_ids:
            raise WhisperFtError(f"the tokenizer has no <|{language}|> token: this model cannot decode {language!r}")
        return self.language_ids[language]

    def prompt(self, language: str | None, task: str = "transcribe", timestamps: bool = False, *,
               multilingual: bool = True) -> list[int]:
        """``<|startoftranscript|> <|lang|> <|task|>`` (+ ``<|notimestamps|>`` without timestamps);
        an English-only model (``multilingual=False``) has no language or task token."""
        tokens = [self.sot]
        if multilingual:
            tokens += [self.language_id(language or "en"), self.task_id(task)]
        return tokens if timestamps else tokens + [self.no_timestamps]

    def timestamp_token(self, seconds: float) -> int:
        """The token of the timestamp nearest to ``seconds`` (clamped to 0 ... 30 s)."""
        seconds = min(max(float(seconds), 0.0), MAX_TIMESTAMP)
        return self.timestamp_begin + int(round(seconds / TIMESTAMP_STEP))

    def is_timestamp(self, token: int) -> bool:
        return token >= self.timestamp_begin

    def seconds(self, token: int) -> float | None:
        """Seconds of a timestamp token, None for any other token."""
        if token < self.timestamp_begin:
            return None
        return round((token - self.timestamp_begin) * TIMESTAMP_STEP, 2)

    def text_tokens(self, ids) -> list[int]:
        """The text tokens of ``ids`` (special and timestamp tokens dropped: every id from
        ``<|endoftext|>`` on, in Whisper's vocabulary)."""
        return [int(t) for t in ids if 0 <= int(t) < self.eot]


def vocabulary_of(tokenizer, *, where: str | None = None) -> WhisperVocabulary:
    """:meth:`WhisperVocabulary.from_tokenizer`, kept on the tokenizer object (reading a 50k-entry
    vocabulary is not free; decoders ask once per window)."""
    cached = getattr(tokenizer, "_whisper_ft_vocabulary", None)
    if isinstance(cached, WhisperVocabulary):
        return cached
    vocab = WhisperVocabulary.from_tokenizer(tokenizer, where=where)
    try:
        tokenizer._whisper_ft_vocabulary = vocab
    except (AttributeError, TypeError):  # an object that takes no attributes: built again next time
        pass
    return vocab

"""Whisper training labels: the prompt tokens, the text, optional timestamps, end of text.

A plain label is::

    <|startoftranscript|> <|zh|> <|transcribe|> <|notimestamps|>  " text"  <|endoftext|>

and a timestamped one (``<|t|>`` = ``<|0.00|>`` ... ``<|30.00|>``, 0.02 s steps)::

    <|startoftranscript|> <|zh|> <|transcribe|>  <|0.00|> " first" <|1.24|> <|1.24|> " second" <|2.50|>  <|endoftext|>

Text follows Whisper's convention of a leading space (``" " + text.strip()``). The collator
drops the leading ``<|startoftranscript|>`` from the labels: the model prepends it again as the
decoder start token when it shifts the labels right, so the loss covers everything after it.

The builder holds token ids only (no tokenizer), so it is cheap to send to DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from whisper_ft.models.generation import MAX_TARGET_TOKENS, TIMESTAMP_STEP, special_token_ids

MAX_TIMESTAMP = 30.0  # seconds: the last timestamp token, <|30.00|>

# A sentence with its text tokens (already encoded with the leading space).
Segment = tuple[float, float, list[int]]


def encode_text(tokenizer, texts: list[str]) -> list[list[int]]:
    """Text token ids with Whisper's leading space; an empty text has no tokens."""
    spaced = [" " + t.strip() if t.strip() else "" for t in texts]
    if not spaced:
        return []
    return [list(ids) for ids in tokenizer(spaced, add_special_tokens=False)["input_ids"]]


@dataclass(frozen=True)
class LabelBuilder:
    """Builds label token sequences for one task from special-token ids."""

    sot: int
    eot: int
    no_timestamps: int
    timestamp_begin: int
    task_id: int
    language_ids: dict[str, int]  # "zh" -> id of <|zh|>

    @classmethod
    def from_tokenizer(cls, tokenizer, task: str = "transcribe") -> LabelBuilder:
        ids = special_token_ids(tokenizer)
        vocab = tokenizer.get_vocab()
        from whisper_ft.models.languages import LANGUAGES

        langs = {code: vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab}
        return cls(
            sot=ids["sot"],
            eot=ids["eot"],
            no_timestamps=ids["no_timestamps"],
            timestamp_begin=ids["timestamp_begin"],
            task_id=ids[task],
            language_ids=langs,
        )

    def has_language(self, language: str) -> bool:
        return language in self.language_ids

    def prefix(self, language: str, timestamps: bool) -> list[int]:
        """``<|startoftranscript|> <|lang|> <|task|>`` (+ ``<|notimestamps|>`` for plain text)."""
        tokens = [self.sot, self.language_ids[language], self.task_id]
        return tokens if timestamps else tokens + [self.no_timestamps]

    def timestamp_token(self, seconds: float) -> int:
        """The token of the 0.02 s step nearest to ``seconds`` (clamped to 0 ... 30 s)."""
        seconds = min(max(seconds, 0.0), MAX_TIMESTAMP)
        return self.timestamp_begin + int(round(seconds / TIMESTAMP_STEP))

    def token_time(self, token: int) -> float | None:
        """Seconds of a timestamp token, None for any other token."""
        if token < self.timestamp_begin:
            return None
        return round((token - self.timestamp_begin) * TIMESTAMP_STEP, 2)

    def plain(self, language: str, text_ids: list[int]) -> list[int]:
        return self.prefix(language, timestamps=False) + list(text_ids) + [self.eot]

    def timestamped(self, language: str, segments: list[Segment]) -> list[int]:
        tokens = self.prefix(language, timestamps=True)
        for start, end, text_ids in segments:
            first = self.timestamp_token(start)
            tokens += [first, *text_ids, max(first, self.timestamp_token(end))]
        return tokens + [self.eot]

    @staticmethod
    def plain_length(text_ids: list[int]) -> int:
        """Length of the plain label without ``<|startoftranscript|>`` (what the decoder predicts)."""
        return 3 + len(text_ids) + 1

    @staticmethod
    def timestamped_length(segments: list[Segment]) -> int:
        return 2 + sum(len(ids) + 2 for _, _, ids in segments) + 1


def fits(length: int) -> bool:
    """Whether a label of ``length`` tokens (without the start token) fits Whisper's decoder."""
    return length <= MAX_TARGET_TOKENS

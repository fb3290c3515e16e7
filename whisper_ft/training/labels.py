"""Whisper training labels: the prompt tokens, the text, optional timestamps, end of text.

A plain label is::

    <|startoftranscript|> <|zh|> <|transcribe|> <|notimestamps|>  " text"  <|endoftext|>

and a timestamped one (``<|t|>`` = ``<|0.00|>`` ... ``<|30.00|>``, 0.02 s steps)::

    <|startoftranscript|> <|zh|> <|transcribe|>  <|0.00|> " first" <|1.24|> <|1.24|> " second" <|2.50|>  <|endoftext|>

Text follows Whisper's convention of a leading space (``" " + text.strip()``) where the space merges
into the first word's token (`` hello``), and starts without it where it would be a token of its
own (Chinese, Japanese: `` 转`` is ``" "`` + ``转``). Whisper's decoders forbid that bare space as
the first token (``begin_suppress_tokens``), so a model taught to start with it is forced at
decoding time onto its next-best choice, another space-led token: `` So``, `` But``, a romanised
syllable, and the transcript continues in English (measured: AISHELL CER 18% -> 60%). The collator
drops the leading ``<|startoftranscript|>`` from the labels: the model prepends it again as the
decoder start token when it shifts the labels right, so the loss covers everything after it.

A prompted label (``--prompt_ratio``) starts with Whisper's previous-text prompt::

    <|startofprev|> " previous text"  <|startoftranscript|> <|zh|> ...  <|endoftext|>

and the collator then gives the decoder its inputs itself, with the prompt and
``<|startoftranscript|>`` masked out of the loss (as Whisper was trained: the prompt is context).

The builder holds token ids only (no tokenizer), so it is cheap to send to DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from whisper_ft.models.generation import MAX_TARGET_TOKENS, TIMESTAMP_STEP

MAX_TIMESTAMP = 30.0  # seconds: the last timestamp token, <|30.00|>
MAX_PROMPT_TOKENS = MAX_TARGET_TOKENS // 2 - 1  # 223: what Whisper reads of a previous-text prompt

# A sentence with its text tokens (already encoded with the leading space).
Segment = tuple[float, float, list[int]]


def encode_text(tokenizer, texts: list[str]) -> list[list[int]]:
    """Text token ids with Whisper's leading space, unless it would be a bare space token (which
    decoders never emit first: see the module docstring); an empty text has no tokens."""
    spaced = [" " + t.strip() if t.strip() else "" for t in texts]
    if not spaced:
        return []
    bare_space = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" "))
    encoded = [list(ids) for ids in tokenizer(spaced, add_special_tokens=False)["input_ids"]]
    if len(bare_space) != 1:
        return encoded
    return [ids[1:] if len(ids) > 1 and ids[0] == bare_space[0] else ids for ids in encoded]


@dataclass(frozen=True)
class LabelBuilder:
    """Builds label token sequences for one task from special-token ids."""

    sot: int
    eot: int
    sot_prev: int
    no_timestamps: int
    timestamp_begin: int
    task_id: int
    language_ids: dict[str, int]  # "zh" -> id of <|zh|>

    @classmethod
    def from_tokenizer(cls, tokenizer, task: str = "transcribe") -> LabelBuilder:
        from whisper_ft.models.vocabulary import WhisperVocabulary

        v = WhisperVocabulary.from_tokenizer(tokenizer)
        return cls(sot=v.sot, eot=v.eot, sot_prev=v.sot_prev, no_timestamps=v.no_timestamps, timestamp_begin=v.timestamp_begin,
                   task_id=v.task_id(task), language_ids=dict(v.language_ids))

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

    def prompted(self, prompt_ids: list[int], label: list[int]) -> list[int]:
        """``<|startofprev|> prompt`` before a label (its last tokens, as many as Whisper reads and the
        decoder's 448 positions leave room for); the collator masks it out of the loss."""
        room = min(MAX_PROMPT_TOKENS, MAX_TARGET_TOKENS - len(label))
        kept = list(prompt_ids)[-room:] if room > 0 else []
        return [self.sot_prev, *kept, *label] if kept else list(label)

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

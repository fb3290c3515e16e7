"""Hallucination indicators of a model on a test set.

- **looping**: a hypothesis that repeats itself (an n-gram of 1..8 tokens repeated at least 4
  times in a row over at least 8 tokens, e.g. ``我的女儿我的女儿我的女儿我的女儿``; tokens are CJK
  characters and words, and the letters of one long word: ``hahahahahaha``), or whose zlib compression ratio is over 2.4 (OpenAI's threshold for
  re-decoding a window). A hypothesis counts only when its reference does not loop itself.
- **insertion rate**: inserted characters/words per reference character/word.
- **long hypotheses**: more than twice the reference length plus 5 (in the metric's units).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from whisper_ft.core.scoring import ScoreResult

MAX_NGRAM = 8
MIN_REPEATS = 4
MIN_LOOP_TOKENS = 8  # a single character 4 times ("哈哈哈哈", "no no no no") is speech, not a loop
COMPRESSION_RATIO_THRESHOLD = 2.4  # OpenAI whisper's transcribe() default
LONG_FACTOR, LONG_MARGIN = 2.0, 5

# one token per CJK character (kana, ideographs, hangul syllables), else one per run of other
# non-space characters
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|"
                    r"[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")


def loop_tokens(text: str) -> list[str]:
    """CJK characters and words, lower-cased, punctuation stuck to words removed."""
    tokens = []
    for t in _TOKEN.findall(text.lower()):
        t = t.strip(".,!?;:\"'()[]{}。，、！？；：“”‘’（）《》…-—")
        if t:
            tokens.append(t)
    return tokens


@dataclass(frozen=True)
class Loop:
    """``ngram`` repeated ``repeats`` times in a row, starting at token ``start``."""

    ngram: tuple[str, ...]
    repeats: int
    start: int

    def describe(self) -> str:
        sep = "" if all(len(t) == 1 for t in self.ngram) else " "
        return f"'{sep.join(self.ngram)}' x{self.repeats}"


def find_loop(tokens: list[str], *, max_n: int = MAX_NGRAM, min_repeats: int = MIN_REPEATS,
              min_tokens: int = MIN_LOOP_TOKENS) -> Loop | None:
    """The longest consecutive repetition of an n-gram (n = 1..max_n) that counts as a loop, or None."""
    best: Loop | None = None
    size = len(tokens)
    for n in range(1, max_n + 1):
        need = max(min_repeats, -(-min_tokens // n))  # repeats needed for this n
        if n * need > size:
            break
        for start in range(0, size - n * need + 1):
            gram = tokens[start:start + n]
            reps = 1
            while tokens[start + reps * n:start + (reps + 1) * n] == gram:
                reps += 1
            if reps >= need and (best is None or reps * n > best.repeats * len(best.ngram)):
                best = Loop(tuple(gram), reps, start)
    return best


def compression_ratio(text: str) -> float:
    """UTF-8 bytes / zlib-compressed bytes (OpenAI whisper's gzip check); 0 for empty text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def loop_reason(text: str) -> str | None:
    """Why ``text`` looks like a looping output ("'我的女儿' x4", "compression ratio 2.9"), or None."""
    tokens = loop_tokens(text)
    loop = find_loop(tokens)
    if loop is not None:
        return loop.describe()
    for t in tokens:  # a loop inside one "word": "aaaaaaaaaa", "hahahahahahaha" (digits are numbers)
        loop = find_loop(list(t)) if len(t) >= MIN_LOOP_TOKENS and t.isalpha() else None
        if loop is not None:
            return loop.describe()
    ratio = compression_ratio(text)
    if ratio > COMPRESSION_RATIO_THRESHOLD:
        return f"compression ratio {ratio:.1f}"
    return None


def is_looping(text: str) -> bool:
    return loop_reason(text) is not None


@dataclass
class HallucinationStats:
    """Per model and test set; ``examples`` holds up to 5 looping/long hypotheses."""

    n_utterances: int
    looping: int
    long_hypotheses: int
    insertions: int
    ref_len: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def insertion_rate(self) -> float:
        return self.insertions / self.ref_len if self.ref_len else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["insertion_rate"] = round(self.insertion_rate, 6)
        return d


def hallucination_stats(result: ScoreResult, *, max_examples: int = 5) -> HallucinationStats:
    """Looping and over-long hypotheses and the insertion rate of a scored test set."""
    looping = long = 0
    examples: list[dict[str, Any]] = []
    for i, u in enumerate(result.utterances):
        reasons = []
        why = loop_reason(u.hyp_norm) or loop_reason(u.hyp)
        if why and not is_looping(u.ref_norm):
            looping += 1
            reasons.append(f"loop: {why}")
        hyp_len = u.hits + u.substitutions + u.insertions
        if hyp_len > LONG_FACTOR * u.ref_len + LONG_MARGIN:
            long += 1
            reasons.append(f"long: {hyp_len} vs {u.ref_len}")
        if reasons and len(examples) < max_examples:
            examples.append({"index": i, "ref": u.ref, "hyp": u.hyp, "why": "; ".join(reasons)})
    return HallucinationStats(n_utterances=result.n_utterances, looping=looping, long_hypotheses=long,
                              insertions=result.insertions, ref_len=result.ref_len, examples=examples)

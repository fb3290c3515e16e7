"""``whisper-ft prepare terms``: a term list mined from training transcripts, for ``--hotwords``.

Whisper conditions on previous text (``<|startofprev|>``): names and jargon given there are written
more often the way they are spelled there (faster-whisper's ``hotwords``, OpenAI's ``prompt``). The
terms a domain repeats are in its transcripts: this mines them without a word segmenter.

- Languages written without spaces (zh, ja, ...; :func:`~whisper_ft.core.text.cer_ignores_spaces`):
  character n-grams of 2 to ``max_n`` characters inside runs of letters (punctuation, digits and
  spaces break a run; a Latin word inside is taken whole), after the scoring normaliser (traditional folded to simplified, full-width folded).
- Other languages: single words and word pairs, lower-cased, without words of fewer than 4 letters
  (function words are short in the languages Whisper writes with spaces).
- A term must occur in at least ``min_count`` utterances; an n-gram that mostly occurs inside a
  longer frequent term (the longer one's count at least :data:`SUBSUMED` of its own) is dropped for
  it (``委会`` goes for ``组委会``, ``宏观经`` for ``宏观经济``);
  terms are ranked by the utterances they occur in (longer first among equals) and the first ``top``
  kept. Whisper reads at most 223 prompt tokens: keep the list short.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError

_LETTERS = re.compile(r"[^\W\d_]+")  # runs of letters (any script): punctuation, digits, spaces break them
_MIN_WORD = 4
SUBSUMED = 0.7


@dataclass(frozen=True)
class Term:
    text: str
    count: int  # utterances it occurs in


def _ngrams(text: str, language: str | None, max_n: int) -> set[str]:
    from whisper_ft.core.text import cer_ignores_spaces, normalize_text

    norm = normalize_text(text, language, numbers=False)
    out: set[str] = set()
    if cer_ignores_spaces(language):
        for run in _LETTERS.findall(norm):
            if run.isascii():  # a Latin word inside the text (a brand, a name): the word itself
                if len(run) >= 3:
                    out.add(run.lower())
                continue
            for n in range(2, max_n + 1):
                out.update(run[i:i + n] for i in range(len(run) - n + 1))
    else:
        words = [w for w in _LETTERS.findall(norm.lower())]
        out.update(w for w in words if len(w) >= _MIN_WORD)
        out.update(f"{a} {b}" for a, b in zip(words, words[1:]) if len(a) >= _MIN_WORD and len(b) >= _MIN_WORD)
    return out


def mine_terms(texts: list[str], languages: list[str | None], *, top: int = 50, min_count: int = 3,
               max_n: int = 4) -> list[Term]:
    """The ``top`` terms of these transcripts (see the module docstring), best first."""
    if top < 1 or min_count < 1 or max_n < 2:
        raise WhisperFtError("--top and --min_count must be at least 1 and --max_n at least 2")
    counts: Counter[str] = Counter()
    for text, lang in zip(texts, languages):
        counts.update(_ngrams(text, lang, max_n))
    frequent = {t: c for t, c in counts.items() if c >= min_count}
    # drop a term that mostly occurs inside a longer frequent term
    kept = {t: c for t, c in frequent.items()
            if not any(len(o) > len(t) and t in o and oc >= SUBSUMED * c for o, oc in frequent.items())}
    ranked = sorted(kept.items(), key=lambda tc: (-tc[1], -len(tc[0]), tc[0]))
    return [Term(t, c) for t, c in ranked[:top]]


def prepare_terms(manifests: list[str | Path], output: str | Path, *, top: int = 50, min_count: int = 3,
                  max_n: int = 4) -> list[Term]:
    """Mine ``manifests``' transcripts and write the terms to ``output``, one per line (a
    ``# N utterances`` comment after each); returns them."""
    from whisper_ft.core.manifest import read_manifest

    utterances = [u for m in manifests for u in read_manifest(m)]
    if not utterances:
        raise WhisperFtError(f"no utterances in {', '.join(map(str, manifests))}: give training manifests")
    terms = mine_terms([u.sentence for u in utterances], [u.language for u in utterances], top=top,
                       min_count=min_count, max_n=max_n)
    out = Path(output)
    if out.is_dir():
        raise WhisperFtError(f"--output {out} is a folder: give a file name (e.g. terms.txt)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(f"{t.text}\t# {t.count} utterances\n" for t in terms), encoding="utf-8")
    tmp.replace(out)
    return terms


def read_terms(path: str | Path) -> list[str]:
    """The terms of a list (one per line; ``#`` comments and blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise WhisperFtError(f"term list not found: {p} (make one with `whisper-ft prepare terms`)")
    terms = [line.split("#", 1)[0].strip() for line in p.read_text(encoding="utf-8-sig").splitlines()]
    return [t for t in terms if t]

"""CER/WER with substitution, deletion and insertion counts (jiwer), after :func:`normalize_text`.

``score(refs, hyps, metric="cer", language="zh")`` returns a :class:`ScoreResult` with the
corpus-level error rate (total edits / total reference length, not a mean of per-utterance
rates) and one :class:`UtteranceScore` per pair, so mistakes can be inspected.

``metric="auto"`` scores each pair by its own language's metric (CER for zh/ja/ko-like languages,
WER otherwise): a test set that mixes both gets the pooled *mixed error rate* (``mer``: total edits
over total reference units, characters for the CER utterances and words for the others, as
code-switching ASR reports it), and every result with more than one language is also broken down
per language (:meth:`ScoreResult.by_language`).

Both sides go through one normaliser, named in the result (``ScoreResult.normalizer``, and so in
report.json): ``whisper-ft/2`` by default (number formatting made comparable), ``whisper-ft/1``
(numbers as written, like tools that only strip punctuation), or ``raw`` (``raw=True``:
whitespace only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.languages import default_metric
from whisper_ft.core.text import (
    BASIC_NORMALIZER_NAME,
    NORMALIZER_DESCRIPTIONS,
    NORMALIZER_NAME,
    RAW_NORMALIZER_NAME,
    cer_ignores_spaces,
    normalize_text,
    normalize_whitespace,
    remove_spaces,
)

METRICS = ("cer", "wer")
AUTO_METRIC = "auto"  # each utterance by its own language's metric
MIXED_METRIC = "mer"  # the pooled rate of a set scored with both
UNITS = {"cer": "chars", "wer": "words", MIXED_METRIC: "units"}
NORMALIZERS = tuple(NORMALIZER_DESCRIPTIONS)


def validate_normalizer(name: str) -> str:
    """A normaliser name (:data:`NORMALIZERS`); anything else raises :class:`WhisperFtError`."""
    if name not in NORMALIZER_DESCRIPTIONS:
        raise WhisperFtError(f"unknown normaliser {name!r}; choose one of: {', '.join(NORMALIZERS)}")
    return name


def validate_metric(metric: str, *, auto: bool = False) -> str:
    """``"CER"`` -> ``"cer"`` (and ``"auto"`` where ``auto``); anything else raises
    :class:`WhisperFtError` listing the choices."""
    m = (metric or "").strip().lower()
    choices = METRICS + ((AUTO_METRIC,) if auto else ())
    if m not in choices:
        raise WhisperFtError(f"unknown metric {metric!r}; choose one of: {', '.join(choices)}")
    return m


@dataclass
class UtteranceScore:
    """One reference/hypothesis pair: raw and normalised texts and its edit counts."""

    ref: str
    hyp: str
    ref_norm: str
    hyp_norm: str
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    metric: str = "cer"
    language: str | None = None

    @property
    def ref_len(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """Edits / reference length (an empty reference counts its insertions against 1)."""
        return self.errors / max(self.ref_len, 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(errors=self.errors, ref_len=self.ref_len, error_rate=round(self.error_rate, 6))
        return d


@dataclass
class ScoreResult:
    """Corpus-level CER or WER and its edit counts."""

    metric: str
    error_rate: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_len: int
    n_utterances: int
    utterances: list[UtteranceScore] = field(default_factory=list, repr=False)
    normalizer: str = NORMALIZER_NAME

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def summary(self) -> str:
        """``CER 12.34% (S 10, D 3, I 2; 121 chars, 8 utterances)``, then each language's rate
        when there are several: ``; zh CER 9.80% (6 utterances), en WER 20.00% (2 utterances)``."""
        line = (
            f"{self.metric.upper()} {100 * self.error_rate:.2f}% (S {self.substitutions}, D {self.deletions}, "
            f"I {self.insertions}; {self.ref_len} {UNITS[self.metric]}, {self.n_utterances} utterances)"
        )
        if self.metric == MIXED_METRIC:
            line += " [mixed: CER units for zh/ja/ko-like utterances, words for the others]"
        parts = self.by_language()
        if len(parts) > 1:
            line += "; " + ", ".join(f"{lang} {r.metric.upper()} {100 * r.error_rate:.2f}% ({r.n_utterances} utterances)"
                                     for lang, r in parts.items())
        return line

    def by_language(self) -> dict[str, ScoreResult]:
        """One result per language of the utterances (``"unknown"`` where none was given), in order
        of first appearance; empty when the utterances carry no scores."""
        groups: dict[str, list[UtteranceScore]] = {}
        for u in self.utterances:
            groups.setdefault(u.language or "unknown", []).append(u)
        return {lang: _pooled(us, self.normalizer) for lang, us in groups.items()}

    def to_dict(self, with_utterances: bool = False) -> dict[str, Any]:
        d = {
            "metric": self.metric,
            "error_rate": round(self.error_rate, 6),
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "hits": self.hits,
            "ref_len": self.ref_len,
            "n_utterances": self.n_utterances,
            "normalizer": self.normalizer,
            "normalizer_description": NORMALIZER_DESCRIPTIONS[self.normalizer],
        }
        parts = self.by_language()
        if len(parts) > 1:
            d["by_language"] = {lang: {k: v for k, v in r.to_dict().items() if not k.startswith("normalizer")}
                                for lang, r in parts.items()}
        if with_utterances:
            d["utterances"] = [u.to_dict() for u in self.utterances]
        return d


def _pooled(utterances: list[UtteranceScore], normalizer: str) -> ScoreResult:
    """Total edits over total reference units; the metric is the utterances' own, or ``mer``
    when they mix CER and WER."""
    metrics = {u.metric for u in utterances}
    total = {k: sum(getattr(u, k) for u in utterances) for k in ("substitutions", "deletions", "insertions", "hits")}
    ref_len = total["substitutions"] + total["deletions"] + total["hits"]
    errors = total["substitutions"] + total["deletions"] + total["insertions"]
    return ScoreResult(metric=metrics.pop() if len(metrics) == 1 else MIXED_METRIC,
                       error_rate=errors / max(ref_len, 1), ref_len=ref_len, n_utterances=len(utterances),
                       utterances=utterances, normalizer=normalizer, **total)


def _counts(alignment) -> tuple[int, int, int, int]:
    s = d = i = h = 0
    for chunk in alignment:
        n_ref = chunk.ref_end_idx - chunk.ref_start_idx
        if chunk.type == "equal":
            h += n_ref
        elif chunk.type == "substitute":
            s += n_ref
        elif chunk.type == "delete":
            d += n_ref
        elif chunk.type == "insert":
            i += chunk.hyp_end_idx - chunk.hyp_start_idx
    return s, d, i, h


def prepare_for_metric(text: str, *, metric: str, language: str | None, normalizer: str = NORMALIZER_NAME) -> str:
    """The normalised text a metric compares: the named normaliser (:func:`normalize_text` by
    default), and for CER on languages written without spaces (or an unknown language) the
    spaces removed."""
    if normalizer == RAW_NORMALIZER_NAME:
        norm = normalize_whitespace(text)
    else:
        norm = normalize_text(text, language, numbers=validate_normalizer(normalizer) != BASIC_NORMALIZER_NAME)
    if metric == "cer" and cer_ignores_spaces(language):
        norm = remove_spaces(norm)
    return norm


def score(
    refs: list[str],
    hyps: list[str],
    *,
    metric: str,
    language: str | None,
    languages: list[str | None] | None = None,
    raw: bool = False,
    normalizer: str | None = None,
) -> ScoreResult:
    """Score hypotheses against references (both normalised first); see the module docstring.

    ``languages`` (optional, one per pair) normalises each pair by its own language (mixed test
    sets); a ``None`` in it falls back to ``language``. ``metric="auto"`` scores each pair by its
    language's metric (:func:`~whisper_ft.core.languages.default_metric`; the result's metric is
    ``mer`` when both occur). ``raw=True`` scores the texts as written
    (whitespace collapsed only; the ``raw`` normaliser); ``normalizer`` picks one of
    :data:`NORMALIZERS` by name (default :data:`~whisper_ft.core.text.NORMALIZER_NAME`).

    Raises :class:`WhisperFtError` for an unknown metric or normaliser, ``raw=True`` with another
    normaliser, lists of different lengths, or when every reference is empty after normalisation
    (nothing to score against).
    """
    import jiwer

    metric = validate_metric(metric, auto=True)
    if raw and normalizer not in (None, RAW_NORMALIZER_NAME):
        raise WhisperFtError(f"raw=True scores without normalising; it cannot be combined with normalizer={normalizer!r}")
    normalizer = validate_normalizer(RAW_NORMALIZER_NAME if raw else normalizer or NORMALIZER_NAME)
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise WhisperFtError(f"{len(refs)} references but {len(hyps)} hypotheses: give one hypothesis per reference")
    if not refs:
        raise WhisperFtError("nothing to score: no references given")
    if languages is None:
        langs = [language] * len(refs)
    elif len(languages) != len(refs):
        raise WhisperFtError(f"{len(languages)} languages for {len(refs)} references: give one per reference")
    else:
        langs = [lang or language for lang in languages]
    metrics = [default_metric(lang) if metric == AUTO_METRIC else metric for lang in langs]
    ref_norm = [prepare_for_metric(r, metric=m, language=lang, normalizer=normalizer) for r, m, lang in zip(refs, metrics, langs)]
    hyp_norm = [prepare_for_metric(h, metric=m, language=lang, normalizer=normalizer) for h, m, lang in zip(hyps, metrics, langs)]
    alignments: list = [None] * len(refs)
    for m in set(metrics):  # one jiwer call per metric, alignments put back in order
        idx = [k for k, mk in enumerate(metrics) if mk == m]
        process = jiwer.process_characters if m == "cer" else jiwer.process_words
        out = process([ref_norm[k] for k in idx], [hyp_norm[k] for k in idx])
        for k, alignment in zip(idx, out.alignments):
            alignments[k] = alignment
    utterances = [UtteranceScore(r, h, rn, hn, *_counts(a), metric=m, language=lang)
                  for r, h, rn, hn, a, m, lang in zip(refs, hyps, ref_norm, hyp_norm, alignments, metrics, langs)]
    result = _pooled(utterances, normalizer)
    if result.ref_len == 0:
        raise WhisperFtError(
            "nothing to score: every reference is empty after normalisation (check the manifest's \"sentence\" field)"
        )
    return result

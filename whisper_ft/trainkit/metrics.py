"""Error rates of an evaluation during training: per-language scoring, edit counts pooled.

A mixed zh/en test set gets CER on the Chinese and WER on the English parts added up correctly.
"""

from __future__ import annotations

from collections import defaultdict


def pooled_error_rates(refs: list[str], hyps: list[str], languages: list[str]) -> tuple[float, float]:
    """(CER, WER) over all utterances: per-language scoring, edits and lengths summed."""
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.core.scoring import score

    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(languages):
        by_lang[lang].append(i)
    rates = []
    for metric in ("cer", "wer"):
        errors = length = 0
        for lang, idx in by_lang.items():
            try:
                result = score([refs[i] for i in idx], [hyps[i] for i in idx], metric=metric, language=lang)
            except WhisperFtError:  # every reference of this language empty after normalisation
                continue
            errors += result.substitutions + result.deletions + result.insertions
            length += result.ref_len
        rates.append(errors / length if length else float("nan"))
    return rates[0], rates[1]

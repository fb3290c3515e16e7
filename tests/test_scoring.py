"""CER/WER with hand-computed S/D/I counts."""

from __future__ import annotations

import pytest

from whisper_ft.errors import WhisperFtError
from whisper_ft.scoring import score


def test_cer_hand_computed():
    refs = ["甚至出现交易几乎停滞的情况", "换一首歌"]
    # 1: 滞 -> 止 (S), 的 dropped (D), final full-width punctuation ignored
    # 2: traditional 換 folds to 换 (hit), 吧 inserted (I), spaces ignored for zh CER
    hyps = ["甚至出现交易几乎停止情况。", "換 一首歌吧"]
    r = score(refs, hyps, metric="cer", language="zh")
    assert (r.substitutions, r.deletions, r.insertions) == (1, 1, 1)
    assert r.hits == 15 and r.ref_len == 17 and r.n_utterances == 2
    assert r.error_rate == pytest.approx(3 / 17)
    u1, u2 = r.utterances
    assert (u1.substitutions, u1.deletions, u1.insertions, u1.hits) == (1, 1, 0, 11)
    assert u1.error_rate == pytest.approx(2 / 13)
    assert u2.hyp_norm == "换一首歌吧" and u2.insertions == 1
    assert "CER 17.65% (S 1, D 1, I 1; 17 chars, 2 utterances)" == r.summary()


def test_wer_hand_computed():
    r = score(
        ["The child almost hurt the small dog.", "ONE TWO THREE"],
        ["the child almost hurts the dog", "One, two, three!"],
        metric="WER",
        language="en",
    )
    # hurt -> hurts (S), small dropped (D); both "ONE TWO THREE" and "One, two, three!" -> "123"
    assert (r.substitutions, r.deletions, r.insertions, r.hits) == (1, 1, 0, 6)
    assert r.ref_len == 8
    assert r.error_rate == pytest.approx(2 / 8)


def test_perfect_and_empty_hypothesis():
    r = score(["你好"], ["你好！"], metric="cer", language="zh")
    assert r.error_rate == 0.0 and r.hits == 2
    r = score(["你好"], [""], metric="cer", language="zh")
    assert r.deletions == 2 and r.error_rate == 1.0


def test_empty_reference_counts_insertions():
    r = score(["。", "好"], ["多余", "好"], metric="cer", language="zh")
    assert r.insertions == 2 and r.ref_len == 1 and r.error_rate == 2.0


def test_english_cer_keeps_spaces():
    r = score(["ab cd"], ["abcd"], metric="cer", language="en")
    assert r.deletions == 1 and r.ref_len == 5


def test_bad_inputs():
    with pytest.raises(WhisperFtError, match="choose one of: cer, wer"):
        score(["a"], ["a"], metric="bleu", language="en")
    with pytest.raises(WhisperFtError, match="1 references but 2 hypotheses"):
        score(["a"], ["a", "b"], metric="wer", language="en")
    with pytest.raises(WhisperFtError, match="nothing to score"):
        score(["。"], ["x"], metric="cer", language="zh")

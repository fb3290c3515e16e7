"""CER/WER with hand-computed S/D/I counts."""

from __future__ import annotations

import pytest

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.scoring import NORMALIZERS, score
from whisper_ft.core.text import NORMALIZER_NAME


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


# --- the normaliser named in every result; numbers (issue 10 §7)
def test_real_pair_number_formatting_no_longer_counts():
    # ../shared/aishell_sample/test.jsonl BAC009S0252W0142 and the bundled base model's output
    r = score(["累计推出约四千套房源"], ["累計推出約4000套房源"], metric="cer", language="zh")
    assert r.error_rate == 0.0 and r.hits == 10
    old = score(["累计推出约四千套房源"], ["累計推出約4000套房源"], metric="cer", language="zh",
                normalizer="whisper-ft/1")
    assert (old.substitutions, old.insertions) == (2, 2)


def test_real_pair_keeps_its_real_errors():
    # BAC009S0252W0133, verbatim
    ref, hyp = "其中中行三百亿授信创新其对房地产的授信记录", "其中中行300億受信創新其對房地產的受信記錄"
    r = score([ref], [hyp], metric="cer", language="zh")
    # only 授 -> 受 (twice) remains; numbers as written: 三百 -> 30 (S 2) and 0 inserted
    assert (r.substitutions, r.deletions, r.insertions) == (2, 0, 0)
    old = score([ref], [hyp], metric="cer", language="zh", normalizer="whisper-ft/1")
    assert (old.substitutions, old.deletions, old.insertions) == (4, 0, 1)


def test_spaces_in_reference_letters_ignored_for_zh_cer():
    r = score(["图东方I C十月十日"], ["圖東方IC10月10日"], metric="cer", language="zh")  # BAC009S0252W0464
    assert r.error_rate == 0.0


def test_english_wer_real_clip():
    # ../shared/audio/en/english.wav: reference "ONE TWO THREE"; Whisper writes digits or words
    r = score(["ONE TWO THREE", "ONE TWO THREE"], ["1, 2, 3.", "One, two, three."], metric="wer", language="en")
    assert r.errors == 0
    old = score(["ONE TWO THREE"], ["1, 2, 3."], metric="wer", language="en", normalizer="whisper-ft/1")
    assert old.errors == 3  # "123" vs "one 2 3"


def test_normalizer_named_in_result():
    d = score(["你好"], ["你好"], metric="cer", language="zh").to_dict()
    assert d["normalizer"] == NORMALIZER_NAME == "whisper-ft/2"
    assert "numerals" in d["normalizer_description"]
    assert set(NORMALIZERS) == {"whisper-ft/2", "whisper-ft/1", "raw"}


def test_raw_scores_text_as_written():
    r = score(["你好"], ["你好！"], metric="cer", language="zh", raw=True)
    assert r.normalizer == "raw" and r.to_dict()["normalizer"] == "raw"
    assert r.insertions == 1 and r.hits == 2
    r = score(["四千套"], ["4000套"], metric="cer", language="zh", raw=True)
    assert (r.substitutions, r.insertions) == (2, 2)  # 四千 vs 4000, counted as written
    r = score(["The  dog"], ["the dog."], metric="wer", language="en", raw=True)
    assert r.substitutions == 2  # case and punctuation count; only whitespace is collapsed
    assert score(["The  dog"], ["the dog."], metric="wer", language="en", normalizer="raw").substitutions == 2


def test_bad_normalizer_choices():
    with pytest.raises(WhisperFtError, match="unknown normaliser 'nfkc'; choose one of: whisper-ft/2, whisper-ft/1, raw"):
        score(["a"], ["a"], metric="wer", language="en", normalizer="nfkc")
    with pytest.raises(WhisperFtError, match="raw=True .* cannot be combined"):
        score(["a"], ["a"], metric="wer", language="en", raw=True, normalizer="whisper-ft/1")


def test_training_time_evaluation_uses_the_same_normaliser():
    # the metrics logged during fine-tuning must agree with `whisper-ft eval`
    from whisper_ft.training.evaluation import pooled_error_rates

    refs = ["累计推出约四千套房源", "ONE TWO THREE"]
    hyps = ["累計推出約4000套房源", "1, 2, 3."]
    cer, wer = pooled_error_rates(refs, hyps, ["zh", "en"])
    assert cer == 0.0 and wer == 0.0


def test_auto_metric_scores_each_utterance_by_its_language_and_pools_them():
    refs = ["甚至出现交易几乎停滞的情况", "The child almost hurt the small dog.", "换一首歌"]
    hyps = ["甚至出现交易几乎停止情况", "the child almost hurts the dog", "换一首歌吧"]
    r = score(refs, hyps, metric="auto", language=None, languages=["zh", "en", "zh"])
    # zh by characters: 2 edits / 13 and 1 / 4; en by words: 2 / 7 (a CER over the English
    # sentence would count characters; a WER over the Chinese one, whole sentences)
    assert [u.metric for u in r.utterances] == ["cer", "wer", "cer"]
    assert r.metric == "mer" and r.ref_len == 13 + 7 + 4 and r.errors == 5
    assert r.error_rate == pytest.approx(5 / 24)
    parts = r.by_language()
    assert list(parts) == ["zh", "en"]
    assert parts["zh"].metric == "cer" and parts["zh"].error_rate == pytest.approx(3 / 17)
    assert parts["en"].metric == "wer" and parts["en"].error_rate == pytest.approx(2 / 7)
    d = r.to_dict()
    assert d["metric"] == "mer" and d["by_language"]["en"]["n_utterances"] == 1
    assert "zh CER 17.65% (2 utterances), en WER 28.57% (1 utterances)" in r.summary()
    # one language: the plain metric, no breakdown; a forced metric applies to all
    assert score(refs[:1], hyps[:1], metric="auto", language="zh").metric == "cer"
    forced = score(refs, hyps, metric="cer", language=None, languages=["zh", "en", "zh"])
    assert forced.metric == "cer" and forced.by_language()["en"].metric == "cer"
    assert "by_language" not in score(refs[:1], hyps[:1], metric="cer", language="zh").to_dict()

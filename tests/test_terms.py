"""`whisper-ft prepare terms`: a term list mined from transcripts, for --hotwords."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.data.terms import mine_terms, read_terms


def test_mines_repeated_words_without_a_segmenter():
    texts = ["宏观经济政策保持稳定", "宏观经济运行平稳", "今年宏观经济好转", "三星发布新手机", "三星公司的手机",
             "这是三星Pay的功能", "用samsungpay付款", "今天天气很好"]
    terms = mine_terms(texts, ["zh"] * len(texts), top=10, min_count=2)
    found = [t.text for t in terms]
    assert found[:2] == ["宏观经济", "三星"]  # 3 utterances each: the longer first
    assert next(t.count for t in terms if t.text == "宏观经济") == 3
    # fragments of a kept term go with it; a phrase seen once is no term
    assert not {"宏观", "观经", "宏观经", "经济"} & set(found) and "天气" not in found
    assert "手机" in found and "samsungpay" not in found  # (a Latin word is one term: seen once here)
    en = mine_terms(["The Kubernetes cluster restarted", "a kubernetes cluster again", "the cluster of kubernetes"],
                    ["en"] * 3, min_count=2)
    assert [t.text for t in en][:3] == ["kubernetes", "cluster", "kubernetes cluster"]  # no short function words
    with pytest.raises(WhisperFtError):
        mine_terms(texts, ["zh"] * len(texts), top=0)


def test_prepare_terms_cli_writes_a_list_read_back_without_comments(tmp_path, capsys):
    rows = [{"audio": {"path": "a.wav"}, "sentence": s, "language": "zh", "duration": 1.0}
            for s in ["宏观经济政策保持稳定", "宏观经济运行平稳", "今年宏观经济好转"]]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, out, err = run_cli(["prepare", "terms", "--manifest", manifest, "--output", tmp_path / "terms.txt",
                              "--min_count", "3"], capsys)
    assert code == 0, err
    assert out.startswith("1 terms in") and "--hotwords" in out
    assert (tmp_path / "terms.txt").read_text(encoding="utf-8") == "宏观经济\t# 3 utterances\n"
    assert read_terms(tmp_path / "terms.txt") == ["宏观经济"]
    code, _, err = run_cli(["prepare", "terms", "--manifest", tmp_path / "none.jsonl"], capsys)
    assert code != 0 and "manifest not found" in err

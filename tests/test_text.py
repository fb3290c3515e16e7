"""The scoring normaliser: punctuation/symbols by Unicode category, full-width, zh conversion, English."""

from __future__ import annotations

import pytest

from whisper_ft.errors import WhisperFtError
from whisper_ft.text import cer_ignores_spaces, english_spelling_map, normalize_text


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        # Chinese and full-width punctuation
        ("甚至出现交易，几乎停滞的情况。", "zh", "甚至出现交易 几乎停滞的情况"),
        ("“你好”——世界……！？", "zh", "你好 世界"),
        ("《红楼梦》【第一回】、（甲）", "zh", "红楼梦 第一回 甲"),
        # full-width letters and digits fold (NFKC)
        ("ＡＢＣ１２３", "zh", "abc123"),
        # traditional -> simplified
        ("這是一個測試", "zh", "这是一个测试"),
        ("廣州市房地產中介協會分析", "chinese", "广州市房地产中介协会分析"),
        ("這是 test", None, "这是 test"),
        # symbols by category, not a fixed list: emoji (So), math (Sm), currency (Sc)
        ("好的👍 1+1=2 ¥5", "zh", "好的 1 1 2 5"),
        # English: case, numbers, spellings, contractions
        ("ONE TWO THREE", "en", "123"),
        ("Twenty-five colours.", "en", "25 colors"),
        ("It's 3.5% of the total!", "en", "it is 3.5 of the total"),
        ("Mr. Smith can't come, um, today", "en", "mister smith can not come today"),
        ("And so, my fellow Americans: ask not!", "english", "and so my fellow americans ask not"),
        # other languages: lower case and punctuation only (accents kept)
        ("Ça va? Très bien!", "fr", "ça va très bien"),
        # whitespace collapsed
        ("  a \t b\n\nc  ", "de", "a b c"),
        ("", "zh", ""),
    ],
)
def test_normalize_table(text, language, expected):
    assert normalize_text(text, language) == expected


def test_decimal_point_between_digits_kept_other_dots_removed():
    assert normalize_text("版本 3.5。", "zh") == "版本 3.5"
    assert normalize_text("a.b", "de") == "a b"


def test_unknown_language_lists_codes():
    with pytest.raises(WhisperFtError, match="unknown language 'klingon'.*zh"):
        normalize_text("x", "klingon")


def test_spelling_map_vendored():
    mapping = english_spelling_map()
    assert mapping["colour"] == "color"
    assert len(mapping) > 1000


def test_cer_space_policy():
    assert cer_ignores_spaces("zh") and cer_ignores_spaces("ja") and cer_ignores_spaces(None)
    assert not cer_ignores_spaces("en")

"""Number formatting made comparable, for scoring (used by :func:`whisper_ft.core.text.normalize_text`).

Whisper writes many numbers as digits (``2015年``, ``4家銀行1000億``, ``1, 2, 3``) where the
reference spells them out (``二零一五年``, ``四家银行一千亿``, ``ONE TWO THREE``). Counting that as
an error measures formatting, not recognition, so both sides are brought to one form:

Chinese (:func:`chinese_numbers`): Arabic digits -> Chinese numerals the way AISHELL-style
references write what was said (rules taken from real reference/Whisper pairs):

- years and digit strings are read digit by digit: a 4-digit number before ``年``
  (``2015年`` -> ``二零一五年``; but ``1000年`` -> ``一千年``, a duration), a generation (``90后`` -> ``九零后``), a number written next to
  Latin letters (``MP4`` -> ``mp四``, ``A380`` -> ``a三八零``; not a date: ``IC10月`` -> ``ic十月``), a number with a leading zero
  (``007``), and runs of 9 or more digits (phone numbers, ids);
- everything else is a quantity: ``3月份`` -> ``三月份``, ``1000億`` -> ``一千亿``,
  ``440余万`` -> ``四百四十余万``, ``第25条`` -> ``第二十五条``, ``10分钟`` -> ``十分钟``;
  a leading 2 before 千/万/亿 and a 2 o'clock read ``两`` as spoken (``2000元`` -> ``两千元``,
  ``2点10分`` -> ``两点十分``), every other 2 is ``二`` (``2套房`` -> ``二套房``);
- decimals read their fraction digit by digit (``8.5折`` -> ``八点五折``, ``3.30`` -> ``三点三零``),
  percentages become ``百分之`` (``80%`` -> ``百分之八十``), ``1,000`` thousands separators go,
  ``3~5`` is read ``三到五``;
- ``〇`` -> ``零`` (the same numeral, two code points). Chinese words are otherwise left alone:
  ``两`` and ``二`` are different words in the references (``两千元``, ``二套房``).

English (:func:`english_number_runs`, after Whisper's English normaliser, which already writes
number words as digits): that normaliser joins spoken runs (``one two three`` -> ``123``,
``two thirty`` -> ``230``) but leaves written ones apart (``1, 2, 3`` -> ``one 2 3``,
``2:30`` -> ``2 30``, ``123-456-7890``); runs of whole numbers separated only by spaces are joined
the same way (a lone ``one``, which the normaliser writes for a digit 1, counts as a digit inside
such a run). Its ``one.5`` for ``1.5`` is read back as ``1.5`` (so ``1.5`` does not become ``15``),
and ``a 100`` (from "a hundred") matches ``100``.
"""

from __future__ import annotations

import re

_DIGITS = "零一二三四五六七八九"
_PLACES = ("", "十", "百", "千")
_SECTION_UNITS = ("", "万", "亿", "万亿")
_LEADING_LIANG = ("二千", "二万", "二亿")

_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*([%‰])")
_TILDE_RANGE = re.compile(r"(\d)\s*[~～〜]\s*(?=\d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# a 4-digit year, also the first of a year range ("2015-2016年", "2015至2016年")
_YEAR_AFTER = re.compile(r"\s*(?:[-–—~～〜至到]\s*\d{4}\s*)?年")
_LATIN = re.compile(r"[a-z]")
_DATE_UNITS = frozenset("年月日号时点分秒")
_LONG_DIGIT_STRING = 9


def digits_to_chinese(digits: str) -> str:
    """``"2015"`` -> ``"二零一五"``: one numeral per digit."""
    return "".join(_DIGITS[int(d)] for d in digits)


def _section_to_chinese(n: int) -> str:
    """0 < n < 10000 -> numerals with place words and inner zeros (``1010`` -> ``一千零一十``)."""
    out, zero = [], False
    for place in range(3, -1, -1):
        d = n // 10**place % 10
        if d == 0:
            zero = bool(out)
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(_DIGITS[d] + _PLACES[place])
    return "".join(out)


def int_to_chinese(n: int) -> str:
    """A quantity as spoken: ``1000`` -> ``一千``, ``15`` -> ``十五``, ``100010`` -> ``十万零一十``,
    ``2500`` -> ``两千五百`` (a leading 2 before 千/万/亿 is ``两``), ``0`` -> ``零``."""
    if n < 0:
        raise ValueError(f"not a non-negative integer: {n}")
    if n == 0:
        return "零"
    sections = []
    while n:
        sections.append(n % 10000)
        n //= 10000
    if len(sections) > len(_SECTION_UNITS):
        raise ValueError("number too large to read as a quantity")
    out, zero = "", False
    for i in range(len(sections) - 1, -1, -1):
        sec = sections[i]
        if sec == 0:
            zero = bool(out)
            continue
        if out and (zero or sec < 1000):
            out += "零"
        out += _section_to_chinese(sec) + _SECTION_UNITS[i]
        zero = False
    if out.startswith("一十"):  # 15 is 十五, not 一十五 (but 115 stays 一百一十五)
        out = out[1:]
    if out.startswith(_LEADING_LIANG):
        out = "两" + out[1:]
    return out


def _reads_digit_by_digit(digits: str, text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if _LATIN.match(after) or (_LATIN.match(before) and after not in _DATE_UNITS):
        return True  # model names and codes: MP4, A380, 4G (but "IC10月10日" is a date)
    if len(digits) > 1 and digits[0] == "0":
        return True
    if len(digits) >= _LONG_DIGIT_STRING:
        return True
    if len(digits) == 4 and _YEAR_AFTER.match(text, end):
        # 2015年 is a year; 1000年/3000年 are far likelier durations (一千年)
        return int(digits) % 1000 != 0 or digits == "2000"
    return len(digits) == 2 and after == "后"  # generations: 90后, 00后


def _number_to_chinese(match: re.Match) -> str:
    text, token = match.string, match.group()
    start, end = match.span()
    whole, _, fraction = token.partition(".")
    if fraction:
        long_or_padded = len(whole) >= _LONG_DIGIT_STRING or (len(whole) > 1 and whole[0] == "0")
        reading = digits_to_chinese(whole) if long_or_padded else int_to_chinese(int(whole))
        return reading + "点" + digits_to_chinese(fraction)
    if _reads_digit_by_digit(whole, text, start, end):
        return digits_to_chinese(whole)
    after = text[end] if end < len(text) else ""
    if whole == "2" and after and after in "千万亿点":
        return "两"  # 2千 -> 两千 like 2000 -> 两千; 2点 (o'clock) -> 两点
    return int_to_chinese(int(whole))


def _percent_to_chinese(match: re.Match) -> str:
    prefix = "百分之" if match.group(2) == "%" else "千分之"
    return prefix + match.group(1)


def chinese_numbers(text: str) -> str:
    """Arabic digits -> Chinese numerals as spoken (see the module docstring); ``〇`` -> ``零``.

    Expects lower-case text whose full-width digits are already folded (NFKC).
    """
    text = text.replace("〇", "零")
    if not any(ch.isdigit() for ch in text):
        return text
    text = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
    text = _PERCENT.sub(_percent_to_chinese, text)
    text = _TILDE_RANGE.sub(r"\1到", text)
    return _NUMBER.sub(_number_to_chinese, text)


_ONE_DECIMAL = re.compile(r"\bone(?=\.\d)")
_A_HUNDRED = re.compile(r"(?<!\S)a (?=1\d{2,}(?!\S))")
# whole tokens only: "1.5 2" must not join into "1.52"
_INTEGER_RUN = re.compile(r"(?<!\S)(?:\d+|one)(?: (?:\d+|one))+(?!\S)")


def _join_run(match: re.Match) -> str:
    # the normaliser turns spoken "one one" into 11 itself, so a "one one" left comes from "1 1"
    return "".join("1" if t == "one" else t for t in match.group().split(" "))


def english_decimals(text: str) -> str:
    """Undo Whisper's English normaliser writing ``one.5`` for ``1.5`` (run before punctuation removal)."""
    return _ONE_DECIMAL.sub("1", text)


def english_number_runs(text: str) -> str:
    """Join space-separated whole numbers as Whisper's normaliser joins spoken ones (``one 2 3`` ->
    ``123``, ``2 30`` -> ``230``) and drop the ``a`` of ``a 100``; expects punctuation removed."""
    text = _A_HUNDRED.sub("", text)
    return _INTEGER_RUN.sub(_join_run, text)

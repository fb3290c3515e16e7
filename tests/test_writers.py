"""SRT/VTT/JSON/TXT writers: valid, formatted, ordered timestamps."""

from __future__ import annotations

import json
import re

import pytest

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription, Word
from whisper_ft.core.writers import (
    format_timestamp,
    output_path,
    render,
    to_json,
    to_srt,
    to_vtt,
    write_transcription,
)

SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.fixture
def transcription() -> Transcription:
    return Transcription(
        language="zh",
        duration=3725.9,
        segments=[
            Segment(0, 0.0, 2.5, "甚至出现交易几乎停滞的情况"),
            Segment(1, 2.5, 4.0, "  "),  # empty: dropped
            # overlaps the previous start and ends before it starts: must be made ordered
            Segment(2, 2.0, 1.5, "换一首歌"),
            Segment(3, 3723.456, 3725.9, "最后一句", words=[Word(3723.456, 3724.0, "最后", 0.9)]),
        ],
    )


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.2345, "00:00:01,234", "00:00:01.234"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (3725.5, "01:02:05,500", "01:02:05.500"),
        (-0.5, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_format_timestamp(seconds, srt, vtt):
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, decimal_marker=".") == vtt


def test_srt_is_valid_and_ordered(transcription):
    text = to_srt(transcription)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 3
    prev_start = -1.0
    for i, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, lines[1]
        start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
        assert prev_start <= start <= end
        prev_start = start
        assert lines[2].strip()
    assert "01:02:03,456 --> 01:02:05,900\n最后一句" in text


def test_vtt_is_valid_and_ordered(transcription):
    text = to_vtt(transcription)
    assert text.startswith("WEBVTT\n\n")
    cues = re.findall(f"^{VTT_TIME} --> {VTT_TIME}\n(.+)$", text, flags=re.M)
    assert [c[-1] for c in cues] == ["甚至出现交易几乎停滞的情况", "换一首歌", "最后一句"]
    starts = [_seconds(*c[:4]) for c in cues]
    ends = [_seconds(*c[4:8]) for c in cues]
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends))


def test_json_shape(transcription):
    data = json.loads(to_json(transcription))
    assert list(data) == ["language", "duration", "segments", "text"]
    assert data["language"] == "zh" and data["duration"] == 3725.9
    assert [s["text"] for s in data["segments"]] == ["甚至出现交易几乎停滞的情况", "换一首歌", "最后一句"]
    assert all(set(s) >= {"start", "end", "text"} for s in data["segments"])
    assert data["segments"][2]["words"][0]["word"] == "最后"
    assert data["text"] == "甚至出现交易几乎停滞的情况换一首歌最后一句"
    assert "甚至" in to_json(transcription)  # UTF-8, not \\u escapes


def test_english_text_joined_with_spaces():
    t = Transcription("en", 4.0, [Segment(0, 0, 2, "Hello there."), Segment(1, 2, 4, "General Kenobi")])
    assert render(t, "txt") == "Hello there. General Kenobi\n"


def test_write_and_output_path(tmp_path, transcription):
    out = output_path("/data/audio/clip.01.wav", tmp_path / "out", "srt")
    assert out == tmp_path / "out" / "clip.01.srt"
    write_transcription(transcription, out, "srt")
    assert out.read_text(encoding="utf-8") == to_srt(transcription)
    assert not list(out.parent.glob(".*.tmp"))


def test_unknown_format():
    with pytest.raises(WhisperFtError, match="choose one of: json, txt, srt, vtt"):
        render(Transcription("en", 1.0, []), "docx")

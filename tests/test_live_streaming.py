"""Live captions' building blocks (whisper_ft.decoding.streaming), no server: Silero VAD on a stream,
the endpointer that cuts utterances, and local agreement of successive hypotheses."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SHARED_AUDIO, make_tone
from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.decoding.streaming import (
    WINDOW,
    Endpointer,
    LocalAgreement,
    Started,
    Stopped,
    StreamingVad,
    TurnDetection,
    word_ends,
)


def _jfk() -> np.ndarray:
    path = SHARED_AUDIO / "en" / "jfk.wav"
    if not path.is_file():
        pytest.skip(f"needs {path} (real speech)")
    from whisper_ft.core.audio import load_audio

    return load_audio(path)


def _pieces(audio: np.ndarray, sizes: list[int]):
    at, i = 0, 0
    while at < len(audio):
        n = sizes[i % len(sizes)]
        yield audio[at: at + n]
        at, i = at + n, i + 1


def _events(endpointer: Endpointer, audio: np.ndarray, sizes: list[int]) -> list:
    return [ev for piece in _pieces(audio, sizes) for ev in endpointer.push(piece)]


def _summary(events) -> list[tuple]:
    return [("start", round(e.at, 3)) if isinstance(e, Started)
            else ("stop", round(e.utterance.start, 3), round(e.utterance.end, 3), len(e.utterance.audio)) for e in events]


@pytest.mark.shared_audio
def test_streamed_vad_gives_faster_whispers_probabilities():
    """Pieces of any size: the same probability per 32 ms window as faster-whisper's VAD on the whole clip."""
    from faster_whisper.vad import get_vad_model

    audio = _jfk()
    whole = np.pad(audio, (0, WINDOW - len(audio) % WINDOW))
    expected = np.asarray(get_vad_model()(whole)).reshape(-1)
    vad = StreamingVad()
    got = np.concatenate([vad.push(p) for p in _pieces(whole, [1000, 37, 4096, 511, 1600])])
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.shared_audio
def test_endpointer_cuts_speech_at_pauses_whatever_the_piece_size():
    """JFK's 11 s has four phrases with pauses of 0.6-1 s between them: four utterances, each with its
    speech inside, the same boundaries for 100 ms pieces, odd pieces and one big push."""
    audio = np.concatenate([_jfk(), np.zeros(SAMPLE_RATE, np.float32)])
    runs = [_summary(_events(Endpointer(TurnDetection(), 25.0), audio, sizes))
            for sizes in ([1600], [333, 4000, 77], [len(audio)])]
    assert runs[0] == runs[1] == runs[2]
    stops = [e for e in runs[0] if e[0] == "stop"]
    assert len(stops) == 4, runs[0]
    assert [e[0] for e in runs[0]] == ["start", "stop"] * 4  # strictly alternating
    for (_, start, end, n) in stops:
        assert 0.3 < end - start < 4.0
        assert n / SAMPLE_RATE >= end - start  # the audio holds the speech and a little pause after it
    assert stops[0][1] < 0.5 and stops[-1][2] > 9.5  # the first word and the last


@pytest.mark.shared_audio
def test_endpointer_silence_duration_decides_what_is_a_pause():
    """With 1.5 s of silence required, JFK's short pauses no longer end an utterance."""
    audio = np.concatenate([_jfk(), np.zeros(2 * SAMPLE_RATE, np.float32)])
    events = _events(Endpointer(TurnDetection(silence_duration_ms=1500), 25.0), audio, [1600])
    assert len([e for e in events if isinstance(e, Stopped)]) < 4


def test_endpointer_without_turn_detection_waits_for_commit_and_cuts_at_the_limit():
    """No VAD events: one utterance opens with the first audio; 60 s are cut at most every 10 s
    (the limit here), every sample is in exactly one utterance, and commit ends the last one."""
    audio = make_tone(60.0)
    endpointer = Endpointer(None, 10.0)
    events = _events(endpointer, audio, [1600, 3000])
    stops = [e.utterance for e in events if isinstance(e, Stopped)]
    assert isinstance(events[0], Started) and events[0].at == 0.0
    assert len(stops) >= 5 and all(len(u.audio) <= 10 * SAMPLE_RATE for u in stops)
    assert all(len(u.audio) >= 5 * SAMPLE_RATE for u in stops)  # the quietest moment of the last 5 s
    last = endpointer.commit()
    assert last is not None and last.forced
    pieces = [u.audio for u in stops] + [last.audio]
    np.testing.assert_array_equal(np.concatenate(pieces), audio)
    assert endpointer.commit() is None  # nothing left


def test_endpointer_clear_drops_the_open_utterance():
    endpointer = Endpointer(None, 25.0)
    endpointer.push(make_tone(2.0))
    assert endpointer.open_audio is not None and len(endpointer.open_audio) == 2 * SAMPLE_RATE
    endpointer.clear()
    assert endpointer.open_audio is None and endpointer.commit() is None
    endpointer.push(make_tone(1.0))
    assert len(endpointer.commit().audio) == SAMPLE_RATE


def test_endpointer_between_utterances_keeps_only_the_padding():
    """Silence streamed for a minute: no event, and no more than the 300 ms padding held."""
    endpointer = Endpointer(TurnDetection(prefix_padding_ms=300), 25.0)
    for piece in _pieces(np.zeros(60 * SAMPLE_RATE, np.float32), [1600]):
        assert endpointer.push(piece) == []
    assert endpointer.held_seconds <= 0.3 + 1e-6
    assert len(endpointer.probs) <= 0.3 * SAMPLE_RATE / WINDOW + 2  # the padding's windows


def test_word_ends_split_cjk_by_character():
    assert word_ends("hello big world") == [5, 9, 15]
    assert word_ends("你好 world，再见") == [1, 2, 8, 9, 10, 11]


def test_local_agreement_sends_what_two_decodes_agree_on_once():
    la = LocalAgreement()
    assert la.update("And so") == ("", "And so")  # nothing to agree with yet
    assert la.update("And so my fellow") == ("And so", " my fellow")
    assert la.update("And so my fellow Americans") == (" my fellow", " Americans")
    assert la.update("And so my fellow Americans, ask") == ("", " Americans, ask")  # "Americans" vs "Americans,"
    assert la.update("And so my fellow Americans, ask not") == (" Americans, ask", " not")
    assert la.stable == "And so my fellow Americans, ask"


def test_local_agreement_never_takes_back_stable_text():
    la = LocalAgreement()
    la.update("the cat sat")
    assert la.update("the cat sat down") == ("the cat sat", " down")
    delta, pending = la.update("a cat sat down on")  # the decoder changed its mind about "the"
    assert delta == "" and la.stable == "the cat sat"
    assert pending == " down on"  # what follows the stable words
    assert la.update("the cat sat down on the mat") == ("", " down on the mat")
    assert la.update("the cat sat down on the mat.") == (" down on the", " mat.")


def test_local_agreement_on_chinese_goes_character_by_character():
    la = LocalAgreement()
    la.update("欢迎大家")
    assert la.update("欢迎大家来体验") == ("欢迎大家", "来体验")
    assert la.update("欢迎大家来体验达摩院") == ("来体验", "达摩院")

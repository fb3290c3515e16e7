"""Live transcription's building blocks, with no server in them (:mod:`whisper_ft.serve.live` drives them):

- :class:`StreamingVad`: Silero VAD (the ONNX model inside faster-whisper, offline) on audio as it
  arrives, one speech probability per 32 ms window; the same numbers as faster-whisper's VAD on the
  whole recording (its LSTM state is carried from one piece to the next).
- :class:`Endpointer`: cuts the stream into utterances. Speech starts at the first window over
  ``threshold`` (the utterance keeps ``prefix_padding_ms`` before it); it stops after
  ``silence_duration_ms`` under the lower threshold, as OpenAI's ``server_vad`` turn detection
  does. Without turn detection the client ends an utterance (``commit``). Either way an utterance
  is cut at ``max_seconds`` (Whisper sees 30 s at most) at its quietest window of the last 5 s.
- :class:`LocalAgreement`: whisper_streaming's policy for partial text: of two successive decodes
  of a growing utterance, the words both begin with are stable (sent once, never taken back); the
  rest of the newest decode is pending (shown, may still change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.results import is_cjk

WINDOW = 512  # Silero's frame: 32 ms at 16 kHz
CONTEXT = 64  # samples of the previous frame Silero sees with each frame
CUT_SEARCH_SECONDS = 5.0  # a forced cut goes at the quietest window of the utterance's last seconds


class StreamingVad:
    """Speech probabilities of a 16 kHz stream, one per complete 512-sample window pushed so far."""

    def __init__(self):
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session  # shared and thread-safe; state lives here
        self._state = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))
        self._context = np.zeros(CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)  # samples short of a whole window

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._rest, audio]) if len(self._rest) else audio
        n = len(audio) // WINDOW
        self._rest = audio[n * WINDOW:].copy()
        if n == 0:
            return np.zeros(0, np.float32)
        windows = audio[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        self._context = windows[-1, -CONTEXT:].copy()
        rows = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1), dtype=np.float32)
        h, c = self._state
        out, h, c = self._session.run(None, {"input": rows, "h": h, "c": c})
        self._state = (h, c)
        return np.asarray(out, np.float32).reshape(-1)


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI's ``server_vad`` settings."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass
class Utterance:
    """A finished utterance: its audio (padding included) and where it lies in the stream (seconds)."""

    audio: np.ndarray
    start: float  # where its audio starts
    end: float  # where its speech ended (or where it was cut)
    forced: bool = False  # cut at the length limit or by the client (commit), not by a pause

    @property
    def speech_samples(self) -> int:
        """Samples from the start of its audio to the end of its speech."""
        return round((self.end - self.start) * SAMPLE_RATE)


@dataclass
class Started:
    at: float  # seconds into the stream where the utterance's audio starts


@dataclass
class Stopped:
    utterance: Utterance


class Endpointer:
    """Feeds on 16 kHz audio; returns :class:`Started` / :class:`Stopped` events in stream order.

    ``turn_detection=None``: no VAD events; the open utterance is all the audio since the last
    one ended, until :meth:`commit` (or the length limit). Memory: the open utterance (at most
    ``max_seconds``) plus less than a window; between utterances only ``prefix_padding_ms``."""

    def __init__(self, turn_detection: TurnDetection | None, max_seconds: float):
        self.turn = turn_detection
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.vad = StreamingVad()
        self.buffer = np.zeros(0, np.float32)  # the open utterance, or the padding kept before one
        self.buffer_start = 0  # stream sample of buffer[0]
        self.probs: list[float] = []  # speech probability of each window of the stream from `probs_start`
        self.probs_start = 0  # stream sample of the window probs[0]
        self.total = 0  # samples received
        self.in_speech = False  # an utterance is open
        self._silence_from: int | None = None

    # --- what the session reads ------------------------------------------------------------

    @property
    def open_audio(self) -> np.ndarray | None:
        """The open utterance's audio so far (None between utterances)."""
        return self.buffer if self.in_speech else None

    @property
    def pause_start(self) -> int | None:
        """Where the open utterance's current pause began, in samples of its audio (None while
        speech goes on, between utterances, and without turn detection)."""
        if not self.in_speech or self._silence_from is None:
            return None
        return self._silence_from - self.buffer_start

    @property
    def held_seconds(self) -> float:
        return len(self.buffer) / SAMPLE_RATE

    # --- input -------------------------------------------------------------------------------

    def push(self, audio: np.ndarray) -> list[Started | Stopped]:
        return self.feed(audio, self.vad.push(audio))

    def feed(self, audio: np.ndarray, probs: np.ndarray) -> list[Started | Stopped]:
        """:meth:`push` with the VAD already run on ``audio`` (``self.vad.push(audio)``, e.g. in a
        worker thread): the events of every window it completes."""
        events: list[Started | Stopped] = []
        first_window = self.probs_start + len(self.probs) * WINDOW
        self.buffer = np.concatenate([self.buffer, audio]) if len(self.buffer) else audio.astype(np.float32, copy=True)
        self.total += len(audio)
        self.probs.extend(float(p) for p in probs)
        if self.turn is None:
            if not self.in_speech and len(audio):
                self.in_speech = True
                events.append(Started(self.buffer_start / SAMPLE_RATE))
            self._cut_if_too_long(self.total, events)
        else:
            for i, p in enumerate(probs):
                self._window(first_window + i * WINDOW, float(p), events)
        if not self.in_speech:  # keep only the padding an utterance would start with (before the next window)
            keep = int(self.turn.prefix_padding_ms * SAMPLE_RATE / 1000) if self.turn else 0
            self._drop_before(min(self.total, self.probs_start + len(self.probs) * WINDOW) - keep)
        self._forget_probs()
        return events

    def commit(self) -> Utterance | None:
        """End the open utterance now (the client's ``input_audio_buffer.commit``); None if none."""
        if not self.in_speech or not len(self.buffer):
            return None
        return self._end(self.total, self.total, forced=True)

    def clear(self) -> None:
        """Drop the open utterance (``input_audio_buffer.clear``)."""
        self.in_speech = False
        self._silence_from = None
        self._drop_before(self.total)

    # --- inside ------------------------------------------------------------------------------

    def _window(self, at: int, p: float, events: list) -> None:
        turn = self.turn
        end = at + WINDOW
        if not self.in_speech:
            if p >= turn.threshold:
                self.in_speech = True
                self._silence_from = None
                start = max(self.buffer_start, at - int(turn.prefix_padding_ms * SAMPLE_RATE / 1000))
                self._drop_before(start)
                events.append(Started(start / SAMPLE_RATE))
            return
        if p >= turn.threshold:
            self._silence_from = None
        elif p < max(turn.threshold - 0.15, 0.01):  # Silero's end-of-speech threshold
            if self._silence_from is None:
                self._silence_from = at
            if end - self._silence_from >= turn.silence_duration_ms * SAMPLE_RATE / 1000:
                # the utterance keeps some of the pause (Whisper ends words better with it)
                tail = min(end, self._silence_from + int(turn.prefix_padding_ms * SAMPLE_RATE / 1000))
                events.append(Stopped(self._end(tail, self._silence_from, forced=False)))
                return
        self._cut_if_too_long(end, events)

    def _cut_if_too_long(self, upto: int, events: list) -> None:
        while self.in_speech and upto - self.buffer_start >= self.max_samples:
            cut = self._quietest(self.buffer_start + self.max_samples)
            events.append(Stopped(self._end(cut, cut, forced=True)))
            self.in_speech = True  # speech goes on in the next utterance, from the cut
            events.append(Started(cut / SAMPLE_RATE))

    def _quietest(self, limit: int) -> int:
        """The start of the least speech-like window in the last CUT_SEARCH_SECONDS before ``limit``."""
        lo = max(self.buffer_start + self.max_samples // 2, limit - int(CUT_SEARCH_SECONDS * SAMPLE_RATE))
        first = max(0, -(-(lo - self.probs_start) // WINDOW))
        last = (limit - self.probs_start) // WINDOW  # windows wholly before the limit
        if last <= first:
            return limit
        i = first + int(np.argmin(self.probs[first:last]))
        return self.probs_start + i * WINDOW

    def _end(self, audio_end: int, speech_end: int, *, forced: bool) -> Utterance:
        audio_end = min(audio_end, self.total)
        audio = self.buffer[: audio_end - self.buffer_start].copy()
        utterance = Utterance(audio, self.buffer_start / SAMPLE_RATE, speech_end / SAMPLE_RATE, forced)
        self.in_speech = False
        self._silence_from = None
        # what follows the cut stays: the pause after speech is the next utterance's padding
        self._drop_before(min(audio_end, speech_end) if not forced else audio_end)
        return utterance

    def _drop_before(self, sample: int) -> None:
        if sample > self.buffer_start:
            self.buffer = self.buffer[sample - self.buffer_start:]
            self.buffer_start = sample

    def _forget_probs(self) -> None:
        drop = (self.buffer_start - self.probs_start) // WINDOW
        if drop > 0:
            del self.probs[:drop]
            self.probs_start += drop * WINDOW


# --- local agreement -------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


def word_ends(text: str) -> list[int]:
    """Where each word of ``text`` ends: a CJK character is a word of its own, other scripts split at spaces."""
    ends = []
    for m in _WORD.finditer(text):
        start = m.start()
        for i, ch in enumerate(m.group(), start):
            if is_cjk(ch):
                if i > start:
                    ends.append(i)
                ends.append(i + 1)
                start = i + 1
        if start < m.end():
            ends.append(m.end())
    return ends


def _words(text: str) -> list[str]:
    out, prev = [], 0
    for end in word_ends(text):
        out.append(text[prev:end].strip())
        prev = end
    return out


@dataclass
class LocalAgreement:
    """Partial text of one utterance from successive decodes of its growing audio."""

    stable: str = ""  # sent as deltas; never changes but by growing
    _previous: list[str] = field(default_factory=list)

    def update(self, hypothesis: str) -> tuple[str, str]:
        """A new decode of the utterance so far -> (delta: newly stable text, pending: the rest)."""
        hypothesis = hypothesis.strip()
        words, ends = _words(hypothesis), word_ends(hypothesis)
        agreed = 0
        while agreed < min(len(words), len(self._previous)) and words[agreed] == self._previous[agreed]:
            agreed += 1
        self._previous = words
        delta = ""
        if agreed > len(word_ends(self.stable)):
            candidate = hypothesis[: ends[agreed - 1]]
            if candidate.startswith(self.stable):
                delta = candidate[len(self.stable):]
                self.stable = candidate
        if hypothesis.startswith(self.stable):
            return delta, hypothesis[len(self.stable):]
        n = len(word_ends(self.stable))  # the decoder changed its mind about stable words: show what follows them
        return delta, hypothesis[ends[n - 1]:] if n < len(ends) else ""

"""Speech to calibrate ``--compute_type auto`` on when a command has none of its own (``serve``,
the Python API): a few English sentences spoken by espeak-ng (:mod:`whisper_ft.data.tts`), about
20 s, one packed window. Nothing is shipped: the sentences are synthesized when needed.

Synthetic English is a weak test of accuracy drift (whisper-base transcribes it well; espeak-ng's
Mandarin it does not, so that would judge noise), which is why commands that have real speech
calibrate on it (``eval``: the test set's first clips; ``infer-ct2``: the files; ``whisper-ft
calibrate AUDIO ...``: yours).
"""

from __future__ import annotations

SENTENCES = (
    "Please send me the report before the end of the week.",
    "We will compare the prices of both offers next Monday.",
    "The meeting in the small room starts after lunch tomorrow.",
    "Our team moved the old servers to the new building last spring.",
    "She asked whether the train to the airport leaves from this platform.",
    "Remember to lock the door and switch off the lights when you leave.",
)
SOURCE = "synthesized English (espeak-ng)"


def synthesized_clips() -> list:
    """The sentences as :class:`~whisper_ft.decoding.calibration.CalibrationClip` (language en);
    a :class:`~whisper_ft.core.errors.DataError` naming the install command without a speech engine."""
    from whisper_ft.data.tts import Variant, find_engine
    from whisper_ft.decoding.calibration import CalibrationClip

    engine = find_engine()
    voice = Variant("en", 160, 50)
    return [CalibrationClip(engine.synthesize(s, voice), "en", SOURCE) for s in SENTENCES]

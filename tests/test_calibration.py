"""--compute_type auto: chosen by measuring on this machine (fake clock, real selection), refused when it
drifts, cached per model + machine + library versions, shown by `whisper-ft doctor`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import make_tone
from whisper_ft.core import cpu as cpu_mod
from whisper_ft.core.cpu import CpuInfo, parse_cpuinfo
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.decoding import calibration as cal
from whisper_ft.decoding.calibration import CalibrationClip, measure, resolve_compute_type

SENTENCE = ("please send me the report before the end of the week we will compare the prices of both offers "
            "next monday the meeting in the small room starts after lunch tomorrow")  # 31 words
CLIPS = [CalibrationClip(make_tone(2.0, seed=i), "en", f"clip{i}") for i in range(3)]
CPU_TYPES = ["int8", "int8_float32", "float32"]


class FakeClock:
    """Seconds that pass only when a fake decoder says its run took them."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_opener(clock: FakeClock, cost: dict[str, float], texts: dict[str, str] | None = None, opened=None):
    """``open_decoder`` whose runs take ``cost[type]`` seconds on ``clock`` and transcribe every clip as
    ``texts[type]`` (float32's sentence by default)."""

    def open_decoder(compute_type):
        if opened is not None:
            opened.append(compute_type)

        def decode(clips):
            clock.now += cost[compute_type]
            return [(texts or {}).get(compute_type, SENTENCE)] * len(clips)

        return decode

    return open_decoder


@pytest.mark.parametrize("cost, fastest", [
    ({"int8": 1.0, "int8_float32": 0.8, "float32": 1.3}, "int8_float32"),  # an AVX2-only CPU
    ({"int8": 0.4, "int8_float32": 0.8, "float32": 1.3}, "int8"),  # VNNI
    ({"int8": 2.0, "int8_float32": 1.5, "float32": 1.2}, "float32"),
])
def test_calibration_picks_the_fastest_candidate_by_the_clock(cost, fastest):
    clock = FakeClock()
    chosen, measured = measure(CPU_TYPES, CLIPS, fake_opener(clock, cost), clock=clock)
    assert chosen == fastest
    assert {m.compute_type: m.seconds for m in measured} == pytest.approx(cost)
    assert all(m.drift_points in (None, 0.0) and not m.refused for m in measured)


def test_the_fastest_of_several_timed_runs_counts():
    clock = FakeClock()
    runs = {"int8": iter([5.0, 1.0, 3.0]), "int8_float32": iter([1.5, 1.5, 1.5]), "float32": iter([2.0, 2.0, 2.0])}

    def open_decoder(ct):
        def decode(clips):
            clock.now += next(runs[ct])  # the first (untimed) run is the slow warm-up
            return [SENTENCE] * len(clips)
        return decode

    chosen, measured = measure(CPU_TYPES, CLIPS, open_decoder, clock=clock, repeats=2)
    assert chosen == "int8" and measured[0].seconds == pytest.approx(1.0)


def test_a_drifting_candidate_is_refused_even_when_fastest():
    clock = FakeClock()
    drifted = SENTENCE.replace("prices", "prizes")  # one word in 31: 3.2 points
    chosen, measured = measure(CPU_TYPES, CLIPS, fake_opener(clock, {"int8": 0.5, "int8_float32": 0.9, "float32": 1.3},
                                                          {"int8": drifted}), clock=clock)
    by = {m.compute_type: m for m in measured}
    assert chosen == "int8_float32"
    assert by["int8"].drift_points == pytest.approx(100 / 31, abs=0.01) and "drifts" in by["int8"].refused
    assert by["int8_float32"].drift_points == 0.0 and not by["int8_float32"].refused


def test_drift_within_half_a_point_is_accepted():
    # 3 clips x 31 words = 93 words per run; 200 clips of them: one changed word is 0.016 points
    clips = CLIPS * 67
    clock = FakeClock()

    def open_decoder(ct):
        def decode(cs):
            clock.now += {"int8": 0.5, "int8_float32": 0.9, "float32": 1.3}[ct]
            out = [SENTENCE] * len(cs)
            if ct == "int8":
                out[0] = SENTENCE.replace("prices", "prizes")
            return out
        return decode

    chosen, measured = measure(CPU_TYPES, clips, open_decoder, clock=clock)
    assert chosen == "int8" and 0 < measured[0].drift_points < 0.5


def test_without_speech_nothing_is_chosen_and_only_the_reference_ran():
    clock, opened = FakeClock(), []
    with pytest.raises(WhisperFtError, match="too little speech"):
        measure(CPU_TYPES, CLIPS, fake_opener(clock, dict.fromkeys(CPU_TYPES, 1.0), dict.fromkeys(CPU_TYPES, ""),
                                              opened), clock=clock)
    assert opened == ["float32"]


def test_a_candidate_that_cannot_run_is_listed_and_skipped():
    clock = FakeClock()
    good = fake_opener(clock, {"int8": 0.5, "int8_float32": 0.7, "float32": 1.0})

    def open_decoder(ct):
        if ct == "int8":
            raise ValueError("int8 is not supported here")
        return good(ct)

    chosen, measured = measure(CPU_TYPES, CLIPS, open_decoder, clock=clock)
    assert chosen == "int8_float32" and measured[0].seconds is None and "not supported" in measured[0].refused


# --- the cache -----------------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A model folder (model.bin) and an empty cache folder of our own."""
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "my-model-ct2"
    model.mkdir()
    (model / "model.bin").write_bytes(b"\0" * 1000)
    cal._TOLD.clear()
    return model


def counting_resolve(model, calls: list, *, threads=2, device="cpu", cost=None, recalibrate=False):
    clock = FakeClock()
    cost = cost or {"int8": 1.0, "int8_float32": 0.8, "float32": 1.3}

    def clips():
        calls.append(1)
        return CLIPS

    return resolve_compute_type(model, device, threads, clips=clips, recalibrate=recalibrate,
                                open_decoder=fake_opener(clock, cost), clock=clock)


def test_the_choice_is_cached_per_model_and_machine(cache, capsys):
    calls: list = []
    assert counting_resolve(cache, calls) == "int8_float32" and len(calls) == 1
    err = capsys.readouterr().err
    assert "measured on 3 clip(s)" in err and "int8 1.00 s" in err and "int8_float32 0.80 s" in err
    # the next use: the cached choice, measured nothing, said in one line
    assert counting_resolve(cache, calls, cost={"int8": 0.1, "int8_float32": 0.8, "float32": 1.3}) == "int8_float32"
    assert len(calls) == 1
    entry = json.loads(cal.cache_file().read_text())["entries"]
    (slot,) = entry
    assert slot.endswith("|cpu") and entry[slot]["chosen"] == "int8_float32"
    assert entry[slot]["key"]["machine"]["instruction_sets"] == cpu_mod.cpu_info().instruction_sets


def test_changing_any_part_of_the_key_measures_again(cache, monkeypatch):
    calls: list = []
    counting_resolve(cache, calls)
    assert len(calls) == 1

    def again(**kw) -> bool:
        before = len(calls)
        counting_resolve(cache, calls, **kw)
        counting_resolve(cache, calls, **kw)  # and is cached again after
        return len(calls) == before + 1

    # the model's content: model.bin rewritten (new size), or touched (new mtime)
    (cache / "model.bin").write_bytes(b"\0" * 2000)
    assert again()
    st = (cache / "model.bin").stat()
    os.utime(cache / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert again()
    # the machine: threads, CPU model, instruction sets
    assert again(threads=1)
    assert again(threads=2)
    real = cpu_mod.cpu_info()
    monkeypatch.setattr(cpu_mod, "cpu_info", lambda: CpuInfo("Another CPU", real.flags, real.source))
    assert again()
    monkeypatch.setattr(cpu_mod, "cpu_info", lambda: CpuInfo("Another CPU", real.flags | {"avx512_vnni"}, real.source))
    assert again()
    # the libraries: ctranslate2, whisper-ft
    real_version = cal._version
    for dist in ("ctranslate2", "whisper-ft"):
        monkeypatch.setattr(cal, "_version", lambda d, dist=dist: "99.0" if d == dist else real_version(d))
        assert again()
    # nothing changed: nothing measured; --calibrate: measured again (every time it is given)
    assert not again()
    before = len(calls)
    counting_resolve(cache, calls, recalibrate=True)
    assert len(calls) == before + 1


def test_another_device_is_its_own_entry(cache, monkeypatch):
    monkeypatch.setattr(cal, "candidate_types", lambda device: CPU_TYPES)  # no CUDA here to ask
    calls: list = []
    counting_resolve(cache, calls)
    counting_resolve(cache, calls, device="cuda")
    counting_resolve(cache, calls)
    assert len(calls) == 2 and len(cal.read_entries()) == 2


def test_without_speech_the_default_is_used_and_nothing_cached(cache, capsys):
    clock = FakeClock()
    chosen = resolve_compute_type(cache, "cpu", 2, clips=lambda: CLIPS, fallback="int8",
                                  open_decoder=fake_opener(clock, dict.fromkeys(CPU_TYPES, 1.0),
                                                           dict.fromkeys(CPU_TYPES, "")), clock=clock)
    assert chosen == "int8" and cal.read_entries() == {}
    assert "not calibrated: the calibration clips hold too little speech" in capsys.readouterr().err


def test_entries_of_deleted_models_are_dropped(cache, tmp_path):
    calls: list = []
    other = tmp_path / "gone-ct2"
    other.mkdir()
    (other / "model.bin").write_bytes(b"x")
    counting_resolve(other, calls)
    import shutil

    shutil.rmtree(other)
    counting_resolve(cache, calls)
    assert [s.rpartition("|")[0] for s in cal.read_entries()] == [str(cache.resolve())]


def test_a_corrupt_cache_file_is_measured_over(cache):
    cal.cache_file().parent.mkdir(parents=True, exist_ok=True)
    cal.cache_file().write_text("{not json")
    calls: list = []
    assert counting_resolve(cache, calls) == "int8_float32" and len(calls) == 1


# --- the real model (tiny), end to end ------------------------------------------------------------

def test_load_backend_auto_without_speech_keeps_the_default(tiny_ct2, cache, capsys):
    """compute_type auto through load_backend with the real (tiny, random) model on tones: float32
    transcribes nothing, so there is no accuracy to check: the default is used, nothing cached."""
    from whisper_ft.decoding.backend import load_backend

    backend = load_backend(tiny_ct2, kind="ct2", threads=1,
                           calibration_clips=lambda: [CalibrationClip(make_tone(3.0), "zh", "tone")])
    assert backend.info["compute_type"] == "int8" and cal.read_entries() == {}
    assert "not calibrated: the calibration clips hold too little speech" in capsys.readouterr().err


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.shared_audio
def test_load_backend_auto_measures_real_speech_once(shared_audio_manifest, cache, capsys):
    """The bundled base, real Mandarin and English clips, the real decoder and clock: every candidate
    is timed, the choice is the fastest accepted one, used, cached, and not measured the next time."""
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.decoding.backend import load_backend

    recs = [r for r in shared_audio_manifest if r["id"] in ("BAC009S0764W0121", "sb_spk1_snt1", "sb_spk1_snt2")]
    calls = []

    def clips():
        calls.append(1)
        return cal.clips_from_files([SHARED_AUDIO / r["audio"] for r in recs], [r["language"] for r in recs])

    backend = load_backend("base", kind="ct2", threads=2, calibration_clips=clips)
    (entry,) = cal.read_entries().values()
    assert backend.info["compute_type"] == entry.chosen and [m.compute_type for m in entry.measured] == CPU_TYPES
    assert all(m.seconds > 0 for m in entry.measured) and entry.clips["languages"] == ["en", "zh"]
    accepted = [m for m in entry.measured if not m.refused]
    assert entry.chosen == min(accepted, key=lambda m: m.seconds).compute_type
    assert all((m.drift_points > cal.MAX_DRIFT_POINTS) == bool(m.refused) for m in entry.measured[:2])
    assert f"compute type {entry.chosen}: measured on 3 clip(s)" in capsys.readouterr().err  # said once
    again = load_backend("base", kind="ct2", threads=2, calibration_clips=clips)
    assert again.info["compute_type"] == entry.chosen and len(calls) == 1
    assert "measured on" not in capsys.readouterr().err
    cal._TOLD.clear()  # a new process: says the cached choice in one line
    load_backend("base", kind="ct2", threads=2, calibration_clips=clips)
    assert f"compute type {entry.chosen} (calibrated on this machine" in capsys.readouterr().err and len(calls) == 1


def test_calibrate_with_an_explicit_compute_type_or_transformers_is_an_error(tiny_ct2, tiny_model_dir):
    from whisper_ft.decoding.backend import load_backend

    with pytest.raises(WhisperFtError, match="--calibrate measures what --compute_type auto picks"):
        load_backend(tiny_ct2, kind="ct2", compute_type="int8", calibrate=True)
    with pytest.raises(WhisperFtError, match="--backend ct2"):
        load_backend(tiny_model_dir, kind="hf", calibrate=True)


def test_clips_come_from_the_first_seconds_of_the_files(make_wav):
    files = [make_wav(f"a{i}.wav", 10.0, seed=i) for i in range(5)]
    clips = cal.clips_from_files(files + ["missing.wav"], ["zh"] * 6)
    assert [c.source for c in clips] == ["a0.wav", "a1.wav"]  # 20 s: a third 10 s would pass one window
    assert sum(len(c.audio) for c in clips) / 16000 <= cal.MAX_SECONDS_PER_LANGUAGE
    (long,) = cal.clips_from_files([make_wav("long.wav", 40.0)])
    assert len(long.audio) == int(cal.MAX_SECONDS_PER_LANGUAGE * 16000)
    assert isinstance(long.audio, np.ndarray)


# --- the CPU and doctor --------------------------------------------------------------------------

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni vaes
"""


def test_cpuinfo_flags_are_read():
    xeon, epyc = parse_cpuinfo(XEON), parse_cpuinfo(EPYC)
    assert xeon.model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert xeon.instruction_sets == ["AVX2", "AVX-512F", "AVX-512 VNNI", "AMX"] and xeon.has_vnni
    assert epyc.instruction_sets == ["AVX2"] and not epyc.has_vnni
    assert "int8 is fast" in xeon.speed_note() and "int8 is weak" in epyc.speed_note()
    assert parse_cpuinfo("nothing useful").source == "unknown"


def test_doctor_shows_the_instruction_sets_and_what_they_mean():
    from whisper_ft.workflows.doctor import check_cpu

    line = check_cpu(parse_cpuinfo(XEON)).detail
    assert "AVX-512 VNNI" in line and "AMX" in line and "int8 is fast" in line
    line = check_cpu(parse_cpuinfo(EPYC)).detail
    assert line.startswith("AMD EPYC 7B13: AVX2;") and "int8_float32 or float32 may be faster" in line


def test_doctor_lists_the_calibrations_and_the_stale_ones(cache, cli):
    code, out, _ = cli("doctor")
    assert "compute type" in out and "auto not measured yet" in out
    assert "cpu" in out and cpu_mod.cpu_info().model in out
    counting_resolve(cache, [])
    code, out, _ = cli("doctor")
    line = next(x for x in out.splitlines() if x[6:].startswith("compute type "))
    assert line.startswith("ok") and "my-model-ct2 on cpu, 2 threads: auto = int8_float32" in line
    assert "int8 1.00 s" in line and "float32 1.30 s" in line
    (cache / "model.bin").write_bytes(b"changed")
    code, out, _ = cli("doctor")
    line = next(x for x in out.splitlines() if x[6:].startswith("compute type "))
    assert line.startswith("WARN") and "stale (model changed)" in line


def test_drift_is_counted_in_characters_for_chinese_and_words_otherwise():
    from whisper_ft.decoding.calibration import drift_points

    assert drift_points(["廣州市房地產中介協會分析"], ["广州市房地产中介协会分析。"], ["zh"]) == 0.0  # script, punctuation
    assert drift_points(["广州市房地产中介协会分析"], ["广州市房地产中间协会分析"], ["zh"]) == pytest.approx(100 / 12)
    assert drift_points([SENTENCE], [SENTENCE.upper() + "!"], ["en"]) == 0.0
    assert drift_points([SENTENCE], [SENTENCE.replace("the week", "the weak")], ["en"]) == pytest.approx(100 / 31)
    assert drift_points(["short"], ["other"], ["en"]) is None  # too little speech to judge


def test_with_the_clips_own_texts_drift_is_the_change_of_error_rate():
    """eval's clips come with what is said: a candidate that makes other mistakes than float32, but
    not more, is not drifting; one that makes more is."""
    truth = SENTENCE
    f32 = SENTENCE.replace("prices", "prizes")  # float32 gets one word wrong
    other = SENTENCE.replace("report", "rapport")  # another word wrong: the same error rate
    worse = other.replace("prices", "prizes")
    clips = [CalibrationClip(make_tone(2.0), "en", "a", truth)]
    clock = FakeClock()
    cost = {"int8": 0.5, "int8_float32": 0.9, "float32": 1.3}
    chosen, measured = measure(CPU_TYPES, clips, fake_opener(clock, cost, {"float32": f32, "int8": other,
                                                                          "int8_float32": other}), clock=clock)
    assert chosen == "int8" and measured[0].drift_points == 0.0
    chosen, measured = measure(CPU_TYPES, clips, fake_opener(clock, cost, {"float32": f32, "int8": worse,
                                                                          "int8_float32": other}), clock=clock)
    assert chosen == "int8_float32" and measured[0].drift_points == pytest.approx(100 / 31, abs=0.01)
    # without the texts, the same transcripts drift: any difference from float32 counts
    clips = [CalibrationClip(make_tone(2.0), "en", "a")]
    chosen, _ = measure(CPU_TYPES, clips, fake_opener(clock, cost, {"float32": f32, "int8": other,
                                                                   "int8_float32": other}), clock=clock)
    assert chosen == "float32"


def test_eval_calibrates_on_its_own_test_clips_with_their_texts(tmp_path, make_wav):
    from whisper_ft.workflows.evaluate import EvalSettings, calibration_clips

    lines = [{"audio": {"path": str(make_wav(f"c{i}.wav", 8.0, seed=i))}, "sentence": f"text {i}", "language": "zh",
              "duration": 8.0} for i in range(5)]
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    clips = calibration_clips(EvalSettings(model="m", test_data=manifest))
    assert [c.text for c in clips] == ["text 0", "text 1", "text 2"] and {c.language for c in clips} == {"zh"}

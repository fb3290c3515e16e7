"""The Python API (`import whisper_ft`): lazy, and the same results as the commands it stands for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, make_tone


def test_import_is_lazy_and_lists_the_api():
    code = ("import sys, whisper_ft; heavy = [m for m in ('torch', 'transformers', 'ctranslate2', 'faster_whisper') "
            "if m in sys.modules]; print(heavy); print(sorted(whisper_ft.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    heavy, names = out.strip().splitlines()
    assert heavy == "[]"
    for name in ("load_model", "transcribe", "finetune", "evaluate", "compare", "convert", "merge", "FinetuneConfig"):
        assert name in names


@pytest.mark.slow
def test_load_model_and_transcribe_match_the_backend(tiny_ct2, tmp_path):
    import soundfile as sf

    import whisper_ft
    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.options import DecodingOptions

    wav = tmp_path / "a.wav"
    sf.write(str(wav), make_tone(3.0), 16_000)
    model = whisper_ft.load_model(str(tiny_ct2), threads=1)
    assert model.info["backend"] == "ct2"
    result = model.transcribe(wav, language="zh", beam_size=1)
    samples = load_audio(wav)
    direct = load_backend(str(tiny_ct2), kind="ct2", threads=1).transcribe(
        samples, DecodingOptions(language="zh", beam_size=1))
    assert result.text == direct.text and result.duration == pytest.approx(3.0)
    assert whisper_ft.transcribe(samples, model, language="zh", beam_size=1).text == direct.text
    assert model.texts([wav, make_tone(2.0, seed=1)], language="zh") == \
        load_backend(str(tiny_ct2), kind="ct2", threads=1).texts(
            [samples, make_tone(2.0, seed=1)], ["zh", "zh"], DecodingOptions(language="zh"))
    with pytest.raises(whisper_ft.WhisperFtError, match="unknown decoding option 'beams'; choose from: .*beam_size"):
        model.transcribe(wav, beams=5)


def test_evaluate_merge_and_finetune(tiny_model_dir, tiny_ct2, tmp_path):
    import soundfile as sf

    import whisper_ft

    rows = []
    for i in range(4):
        path = tmp_path / f"c{i}.wav"
        sf.write(str(path), make_tone(1.0 + i * 0.3, seed=i), 16_000)
        rows.append({"audio": {"path": path.name}, "sentence": "你好", "duration": 1.0 + i * 0.3, "language": "zh"})
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    report = whisper_ft.evaluate(tiny_ct2, manifest, backend="ct2", cpu_threads=1, beam_size=2)
    assert report.score.n_utterances == 4 and report.score.metric == "cer" and report.settings.num_beams == 2

    config = whisper_ft.FinetuneConfig(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "runs"))
    config.data.train_data, config.data.test_data = str(manifest), str(manifest)
    config.train.max_steps, config.train.eval_steps, config.train.save_steps = 2, 2, 2
    config.train.per_device_train_batch_size, config.train.num_threads = 2, 1
    config.data.num_workers = 0
    run = whisper_ft.finetune(config)
    assert run.global_step == 2 and run.best_dir is not None and (run.best_dir / "adapter_config.json").is_file()
    merged = whisper_ft.merge(run.best_dir, tmp_path / "merged")
    assert (merged.output_dir / "config.json").is_file()
    with pytest.raises(whisper_ft.WhisperFtError, match="already exists"):
        whisper_ft.merge(run.best_dir, tmp_path / "merged")

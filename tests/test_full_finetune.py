"""`whisper-ft finetune --method full|lora|adalora`, `--freeze_encoder`, per-method learning rates.

A full fine-tune goes through the same trainer as LoRA (data checks, best/ rule, resume, the
anti-forgetting options) and its best/ is a whole model that convert, eval and the rest take
directly; merge refuses it. On the tiny random model (the trainable copy of test_finetune).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_finetune import TEXTS, four_utterances, trainable_tiny_dir  # noqa: F401 (fixtures)
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.training.config import DataSettings, FinetuneConfig, LoraSettings, TrainSettings

FAST = {"warmup_steps": 0, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "logging_steps": 1,
        "num_threads": 1}


def full_config(model_dir, data_dir, out, *, lora=None, **settings) -> FinetuneConfig:
    method = settings.pop("method", "full")
    freeze = settings.pop("freeze_encoder", False)
    return FinetuneConfig(
        base_model=str(model_dir), output_dir=str(out), method=method, freeze_encoder=freeze,
        lora=LoraSettings(**(lora or {})),
        data=DataSettings(train_data=str(data_dir / "train.jsonl"), test_data=str(data_dir / "test.jsonl"),
                          num_workers=0),
        train=TrainSettings(**{**FAST, **settings}))


@pytest.fixture(scope="module")
def full_run(trainable_tiny_dir, four_utterances, tmp_path_factory):  # noqa: F811
    from whisper_ft.training.trainer import finetune

    out = tmp_path_factory.mktemp("full")
    # best/ by the loss: the last evaluation (WER is 0 at both; a tie keeps the earlier, less settled one)
    config = full_config(trainable_tiny_dir, four_utterances, out, learning_rate=5e-3, max_steps=16, eval_steps=8,
                         save_steps=8, save_total_limit=2, metric_for_best="loss")
    return finetune(config), config


def _losses(run_dir: Path, step: int) -> list[float]:
    state = json.loads((run_dir / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
def test_full_finetune_overfits_and_best_is_a_whole_model(full_run):
    result, config = full_run
    assert not result.interrupted and result.global_step == 16
    losses = _losses(result.run_dir, 16)
    assert losses[-1] < 0.1 * losses[0], losses  # every weight moves: the four clips are learnt
    assert result.best_metrics["step"] == 16 and result.best_metrics["eval_wer"] == 0.0
    best = result.best_dir
    for name in ("config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
                 "tokenizer.json", "finetune_config.json", "metrics.json", "README.md"):
        assert (best / name).is_file(), name
    assert not (best / "adapter_config.json").exists()
    assert json.loads((best / "config.json").read_text())["use_cache"] is True  # off only while training
    saved = json.loads((best / "finetune_config.json").read_text())
    assert saved["method"] == "full" and saved["train"]["learning_rate"] == 5e-3

    from whisper_ft.models.registry import resolve_model

    assert resolve_model(str(best)).kind == "hf"  # what every command resolves it as


@pytest.mark.slow
def test_full_best_is_taken_directly_by_eval_and_convert(full_run, tmp_path, capsys):
    """eval (transformers), convert, and eval of the conversion (CTranslate2) take best/ as it is."""
    result, config = full_run
    best, manifest = result.best_dir, config.data.train_data
    code, out, err = run_cli(["eval", "--model_path", best, "--test_data", manifest, "--output_dir", tmp_path / "e1",
                              "--backend", "hf", "--metric", "wer"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "e1" / "report.json").read_text())["error_rate"] == 0.0

    code, out, err = run_cli(["convert", "--model", best, "--output_dir", tmp_path / "ct2", "--quantization",
                              "float32"], capsys)
    assert code == 0, err
    ct2 = tmp_path / "ct2"
    assert (ct2 / "model.bin").is_file() and (ct2 / "README.md").is_file()
    code, out, err = run_cli(["eval", "--model_path", ct2, "--test_data", manifest, "--output_dir", tmp_path / "e2",
                              "--backend", "ct2", "--compute_type", "float32", "--no_pack", "--metric", "wer"], capsys)
    assert code == 0, err
    preds = [json.loads(line) for line in (tmp_path / "e2" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["hyp"] for p in preds) == sorted(TEXTS)


@pytest.mark.slow
def test_merge_refuses_a_full_run_with_one_line(full_run, tmp_path, capsys):
    result, _ = full_run
    for given in (result.best_dir, result.run_dir):
        code, out, err = run_cli(["merge", "--lora_model", given, "--output_dir", tmp_path], capsys)
        assert code == 1 and out == ""
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: ") and "nothing to merge" in line and f"use {result.best_dir} directly" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_full_resume_equals_uninterrupted(trainable_tiny_dir, four_utterances, tmp_path):  # noqa: F811
    """Ctrl-C during step 2 or 3, resume: the same weights at step 5 as a run that never stopped."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from whisper_ft.training.trainer import finetune

    settings = {"max_steps": 5, "save_steps": 100, "eval_steps": 100, "per_device_train_batch_size": 2,
                "learning_rate": 1e-3}
    full = finetune(full_config(trainable_tiny_dir, four_utterances, tmp_path / "a", **settings))

    class CtrlCAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    cut = finetune(full_config(trainable_tiny_dir, four_utterances, tmp_path / "b", **settings),
                   callbacks=[CtrlCAtStep2()])
    assert cut.interrupted and 2 <= cut.global_step < 5
    assert cut.last_checkpoint.name == f"checkpoint-{cut.global_step}"
    assert (cut.last_checkpoint / "model.safetensors").is_file()
    resumed = finetune(full_config(trainable_tiny_dir, four_utterances, tmp_path / "b",
                                   **{**settings, "resume_from_checkpoint": "latest"}))
    assert resumed.global_step == 5 and not resumed.interrupted
    a = load_file(str(full.run_dir / "checkpoint-5" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoint-5" / "model.safetensors"))
    base = load_file(str(Path(trainable_tiny_dir) / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = 0
    for k in a:
        assert np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6), k
        moved += k in base and not np.allclose(a[k].numpy(), base[k].numpy())
    assert moved > len(a) // 2  # a full fine-tune: most tensors changed


@pytest.mark.slow
def test_freeze_encoder_and_kl_reference(trainable_tiny_dir, four_utterances, tmp_path, capsys):  # noqa: F811
    """--freeze_encoder: only decoder weights change; --kl_to_base: a frozen copy of the base is the
    reference (its cost stated), KL 0 at the first step and positive once the weights moved."""
    from safetensors.torch import load_file

    from whisper_ft.training.trainer import finetune

    result = finetune(full_config(trainable_tiny_dir, four_utterances, tmp_path, freeze_encoder=True, kl_to_base=1.0,
                                  learning_rate=1e-3, max_steps=3, eval_steps=3, save_steps=3))
    err = capsys.readouterr().err
    assert "full fine-tuning of the decoder (--freeze_encoder)" in err
    assert "a frozen copy of the base model stays on the training device (CPU)" in err and "MiB more memory" in err
    base = load_file(str(Path(trainable_tiny_dir) / "model.safetensors"))
    tuned = load_file(str(result.best_dir / "model.safetensors"))
    encoder = [k for k in base if ".encoder." in f".{k}"]
    decoder = [k for k in base if ".decoder." in f".{k}" and "embed_positions" not in k]
    assert encoder and decoder
    assert all(np.array_equal(base[k].numpy(), tuned[k].numpy()) for k in encoder)
    assert sum(not np.array_equal(base[k].numpy(), tuned[k].numpy()) for k in decoder) > len(decoder) // 2
    state = json.loads((result.run_dir / "checkpoint-3" / "trainer_state.json").read_text())
    kls = [h["kl_to_base"] for h in state["log_history"] if "kl_to_base" in h]
    assert len(kls) == 3 and kls[0] == 0.0 and kls[-1] > 0


def test_method_settings_and_learning_rate_defaults():
    cfg = FinetuneConfig(base_model="base", method="full")
    assert cfg.train.learning_rate == 1e-5 and cfg.learning_rate_defaulted
    cfg = FinetuneConfig(base_model="base")
    assert cfg.method == "lora" and cfg.train.learning_rate == 1e-3 and cfg.learning_rate_defaulted
    cfg = FinetuneConfig(base_model="base", method="full", train=TrainSettings(learning_rate=3e-5))
    assert cfg.train.learning_rate == 3e-5 and not cfg.learning_rate_defaulted
    cfg = FinetuneConfig(base_model="base", lora=LoraSettings(use_adalora=True))
    assert cfg.method == "adalora"
    cfg = FinetuneConfig(base_model="base", method="ADALORA")
    assert cfg.method == "adalora" and cfg.lora.use_adalora
    cfg = FinetuneConfig(base_model="base", freeze_encoder=True)
    assert cfg.lora.encoder_layers == 0  # LoRA, decoder only
    again = FinetuneConfig.from_dict(json.loads(json.dumps(FinetuneConfig(base_model="base", method="full").to_dict())))
    assert again.method == "full" and again.train.learning_rate == 1e-5 and not again.learning_rate_defaulted
    bad = [
        (dict(method="dora"), "unknown --method 'dora'; choose one of: full, lora, adalora"),
        (dict(method="full", lora=LoraSettings(use_adalora=True)), "--use_adalora is --method adalora"),
        (dict(method="full", lora=LoraSettings(r=8)), "--lora_r set(s) the LoRA adapters, which --method full"),
        (dict(method="full", train=TrainSettings(use_8bit=True)), "--use_8bit loads frozen weights in 8 bits"),
        (dict(freeze_encoder=True, lora=LoraSettings(encoder_layers=2)), "excludes --lora_encoder_layers 2"),
    ]
    for kwargs, message in bad:
        with pytest.raises(WhisperFtError, match=message.replace("(", r"\(").replace(")", r"\)")):
            FinetuneConfig(base_model="base", **kwargs)


def test_resume_refuses_a_checkpoint_of_the_other_method(tmp_path):
    from whisper_ft.training.trainer import check_checkpoint_matches

    adapter, whole = tmp_path / "checkpoint-1", tmp_path / "checkpoint-2"
    adapter.mkdir()
    whole.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 32}))
    (whole / "config.json").write_text("{}")
    check_checkpoint_matches(adapter, FinetuneConfig(base_model="base"))
    check_checkpoint_matches(whole, FinetuneConfig(base_model="base", method="full"))
    with pytest.raises(WhisperFtError, match="it holds a LoRA adapter, this run is --method full"):
        check_checkpoint_matches(adapter, FinetuneConfig(base_model="base", method="full"))
    with pytest.raises(WhisperFtError, match=r"it holds a fully fine-tuned model \(--method full\), this run is "
                                             "--method lora"):
        check_checkpoint_matches(whole, FinetuneConfig(base_model="base"))


def test_cli_method_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    common = ["--base_model", str(tiny_model_dir), "--train_data", "nope.jsonl", "--output_dir", str(tmp_path / "o")]
    code, out, err = run_cli(["finetune", "--method", "qlora", *common], capsys)
    assert code == 1 and out == "" and err.strip().splitlines()[-1] == (
        "error: unknown --method 'qlora'; choose one of: full, lora, adalora")
    code, _, err = run_cli(["finetune", "--method", "full", "--lora_r", "8", *common], capsys)
    assert code == 1 and "which --method full has none of" in err
    code, _, err = run_cli(["finetune", "--report_to", "comet", *common], capsys)
    assert code == 1 and "unknown --report_to 'comet'; choose one of: tensorboard, wandb, mlflow, none" in err
    assert not (tmp_path / "o").exists()


REPORTERS = {"wandb": {"WANDB_MODE": "offline", "WANDB_DIR": "{tmp}", "WANDB_SILENT": "true"},
             "mlflow": {"MLFLOW_TRACKING_URI": "file:{tmp}/mlruns"}}


@pytest.mark.parametrize("reporter", sorted(REPORTERS))
def test_report_to_a_missing_package_is_one_line(reporter, tiny_model_dir, four_utterances, tmp_path, capsys):  # noqa: F811
    import importlib.util

    if importlib.util.find_spec(reporter) is not None:
        pytest.skip(f"{reporter} is installed here: test_report_to_offline_logs runs it")
    code, out, err = run_cli(["finetune", "--base_model", tiny_model_dir, "--train_data",
                              four_utterances / "train.jsonl", "--test_data", four_utterances / "test.jsonl",
                              "--output_dir", tmp_path / "o", "--report_to", reporter], capsys)
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (f"error: --report_to {reporter} needs the {reporter} package: pip install "
                                            f"{reporter} (or --report_to tensorboard|none)")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("reporter", sorted(REPORTERS))
def test_report_to_offline_logs(reporter, trainable_tiny_dir, four_utterances, tmp_path, monkeypatch):  # noqa: F811
    """Where the package is installed, its offline mode receives the run's logs."""
    pytest.importorskip(reporter, reason=f"{reporter} is not installed (the missing-package error is tested)")
    from whisper_ft.training.trainer import finetune

    for key, value in REPORTERS[reporter].items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    finetune(full_config(trainable_tiny_dir, four_utterances, tmp_path / "o", method="lora", report_to=reporter,
                         max_steps=1, eval_steps=1, save_steps=1))
    logged = list((tmp_path / ("wandb" if reporter == "wandb" else "mlruns")).rglob("*"))
    assert any(p.is_file() for p in logged)


@pytest.mark.slow
def test_report_to_none_writes_no_logs(trainable_tiny_dir, four_utterances, tmp_path):  # noqa: F811
    from whisper_ft.training.trainer import finetune

    result = finetune(full_config(trainable_tiny_dir, four_utterances, tmp_path, method="lora", report_to="none",
                                  max_steps=1, eval_steps=1, save_steps=1))
    assert result.best_dir is not None and not list(result.run_dir.rglob("events.out.tfevents*"))

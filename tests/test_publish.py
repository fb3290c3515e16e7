"""Model cards (README.md in the Hub's format) and `whisper-ft push` against a fake hub on loopback.

The uploads go through the official huggingface_hub client to tests/fake_hub.py (HF_ENDPOINT on
127.0.0.1), in a subprocess with its own HF_HOME: nothing reaches the network or a real token.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.fake_hub import FakeHub

TOKEN = "hf_fake_token"


def push_cli(*args, endpoint: str, token: str | None = TOKEN, home: Path, offline: str = "0"):
    """``whisper-ft ARGS`` in a fresh process: (exit code, stdout, stderr)."""
    # the hub variables of this process (an earlier test or command may have turned offline mode on) stay out
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_OFFLINE", "WHISPER_FT_OFFLINE"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_OFFLINE=offline, HF_HUB_DISABLE_PROGRESS_BARS="1",
               WHISPER_FT_CACHE=str(home / "wft-cache"), PYTHONPATH=str(REPO))
    if token is not None:
        env["HF_TOKEN"] = token
    p = subprocess.run([sys.executable, "-m", "whisper_ft", *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=300, cwd=home)
    return p.returncode, p.stdout, p.stderr


def card_of(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def ct2_copy(tiny_ct2, tmp_path) -> Path:
    """A converted model of our own to upload (the session's tiny_ct2 stays as it is)."""
    return Path(shutil.copytree(tiny_ct2, tmp_path / "tiny-ct2"))


def test_convert_writes_a_card_in_the_hubs_format(ct2_copy):
    card = card_of(ct2_copy)
    meta = card.data.to_dict()
    assert meta["library_name"] == "ctranslate2" and meta["pipeline_tag"] == "automatic-speech-recognition"
    assert {"whisper", "whisper-ft", "faster-whisper"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is not a hub id
    assert "converted to CTranslate2 (float32)" in card.text and "from faster_whisper import WhisperModel" in card.text


@pytest.mark.slow
def test_push_uploads_every_file_through_huggingface_hub(ct2_copy, tmp_path):
    with FakeHub(token=TOKEN) as hub:
        code, out, err = push_cli("push", "--model", ct2_copy, "--repo_id", "me/tiny-ct2", "--private",
                                  endpoint=hub.endpoint, home=tmp_path)
        assert code == 0, err
        result = json.loads(out)
        assert result["repo_id"] == "me/tiny-ct2" and result["url"] == f"{hub.endpoint}/me/tiny-ct2"
        repo = hub.repos["me/tiny-ct2"]
        assert repo["private"] is True and repo["commits"] == ["Upload tiny-ct2 with whisper-ft"]
        assert repo["files"] == files_of(ct2_copy)  # every file, byte for byte (model.bin, README.md, ...)
        assert {"model.bin", "README.md", "tokenizer.json", "preprocessor_config.json"} <= set(repo["files"])
        # again into the same repository (it exists: created with exist_ok), without a namespace
        code, out, err = push_cli("push", "--model", ct2_copy, "--repo_id", "me/tiny-ct2", "--commit_message", "v2",
                                  endpoint=hub.endpoint, home=tmp_path)
        assert code == 0, err
        assert repo["commits"][-1] == "v2"
        assert ("POST", "/api/models/me/tiny-ct2/preupload/main") in hub.calls


@pytest.mark.slow
def test_push_errors_are_one_line(ct2_copy, tmp_path):
    with FakeHub(token=TOKEN) as hub:
        cases = [
            (dict(token=None), "error: no Hugging Face token: pass --token, set HF_TOKEN, or log in once"),
            (dict(token="hf_wrong"), "refused the token (401): check --token / HF_TOKEN"),
            (dict(offline="1"), "push needs the hub, and offline mode is on"),
        ]
        for kwargs, expected in cases:
            code, out, err = push_cli("push", "--model", ct2_copy, "--repo_id", "me/x", endpoint=hub.endpoint,
                                      home=tmp_path, **kwargs)
            lines = err.strip().splitlines()
            assert code == 1 and out == "" and expected in lines[-1], (kwargs, err)
            assert all(not line.startswith("Traceback") for line in lines)
        code, _, err = push_cli("push", "--model", ct2_copy, "--repo_id", "a/b/c", endpoint=hub.endpoint, home=tmp_path)
        assert code == 1 and "--repo_id 'a/b/c' is not a repository name" in err
        code, _, err = push_cli("push", "--model", tmp_path, "--repo_id", "me/x", endpoint=hub.endpoint, home=tmp_path)
        assert code == 1 and "is not a model folder" in err
        assert hub.repos == {}
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, out, err = push_cli("push", "--model", ct2_copy, "--repo_id", "me/x", endpoint=closed, home=tmp_path)
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: cannot reach the Hugging Face hub at {closed}")


@pytest.mark.slow
def test_merge_push_to_hub(tiny_model_dir, tmp_path):
    """`merge --push_to_hub`: the merged folder, its card included, arrives; a missing token fails before merging."""
    import torch
    from peft import LoraConfig, get_peft_model

    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(tiny_model_dir)
    model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = tmp_path / "run" / "best"
    model.save_pretrained(str(adapter))
    with FakeHub(token=TOKEN) as hub:
        code, _, err = push_cli("merge", "--lora_model", adapter, "--output_dir", tmp_path / "out", "--push_to_hub",
                                "me/merged", token=None, endpoint=hub.endpoint, home=tmp_path)
        assert code == 1 and "no Hugging Face token" in err and not (tmp_path / "out").exists()
        code, out, err = push_cli("merge", "--lora_model", adapter, "--output_dir", tmp_path / "out", "--push_to_hub",
                                  "me/merged", endpoint=hub.endpoint, home=tmp_path)
        assert code == 0, err
        merged = Path(out.strip())
        assert hub.repos["me/merged"]["files"] == files_of(merged)
    card = card_of(merged)
    assert card.data.to_dict()["library_name"] == "transformers"
    assert "adapter merged into the base (float32)" in card.text


@pytest.mark.slow
def test_card_adds_eval_and_compare_results_and_keeps_a_users_readme(tiny_model_dir, tmp_path, make_wav, capsys):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "my-model"))
    make_wav("a.wav", 1.0)
    make_wav("b.wav", 1.5, seed=1)
    manifest = tmp_path / "set.jsonl"
    manifest.write_text("".join(json.dumps({"audio": {"path": f"{n}.wav"}, "sentence": "hello", "duration": d,
                                            "language": "en"}) + "\n" for n, d in (("a", 1.0), ("b", 1.5))))
    code, _, err = run_cli(["eval", "--model_path", model, "--test_data", manifest, "--output_dir", tmp_path / "ev",
                            "--max_new_tokens", "8"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["compare", "--models", f"base={tiny_model_dir},mine={model}", "--test_data",
                            f"greetings={manifest}", "--output_dir", tmp_path / "cmp", "--max_new_tokens", "8",
                            "--bootstrap", "200", "--timestamp_clips", "0"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["card", "--model", model, "--eval_report", tmp_path / "ev" / "report.json",
                              "--compare_report", tmp_path / "cmp"], capsys)
    assert code == 0, err
    assert out.strip() == str(model / "README.md")
    card = card_of(model)
    evaluated = {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
    assert evaluated == {("set", "wer"), ("greetings (compare)", "wer")}  # the eval row, and this model's compare row
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    row = next(r for r in card.data.eval_results if r.dataset_name == "set")
    assert row.metric_value == round(100 * report["error_rate"], 2)
    assert "## Comparison (whisper-ft compare)\n\nReference: base." in card.text
    assert "| greetings | mine (this model)" in card.text
    # A conversion of it starts from its card: the results move to "made from", out of its model-index.
    code, _, err = run_cli(["convert", "--model", model, "--output_dir", tmp_path / "mine-ct2", "--quantization",
                            "float32"], capsys)
    assert code == 0, err
    converted = card_of(tmp_path / "mine-ct2")
    assert converted.data.eval_results is None
    assert "### Measured on my-model" in converted.text and "| greetings | mine (this model)" in converted.text
    assert "converted to CTranslate2 (float32)" in converted.text
    code, _, err = run_cli(["card", "--model", model, "--compare_report", tmp_path / "cmp", "--compare_model", "nope"],
                           capsys)
    assert code == 1 and "--compare_model 'nope' is not a model of that compare report; choose one of: base, mine" in err

    # A README the user wrote is never replaced, by `card` or by a later write of the folder.
    (model / "README.md").write_text("# my own notes\n")
    code, out, err = run_cli(["card", "--model", model, "--eval_report", tmp_path / "ev"], capsys)
    assert code == 0 and out == "" and "kept your README.md" in err
    assert (model / "README.md").read_text() == "# my own notes\n"


@pytest.mark.slow
def test_convert_force_replaces_only_a_generated_card(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "x-ct2"
    args = ["convert", "--model", tiny_model_dir, "--output_dir", out, "--quantization", "int8"]
    assert run_cli(args, capsys)[0] == 0
    from whisper_ft.models.card import is_generated

    assert is_generated(out / "README.md")
    assert run_cli([*args, "--force"], capsys)[0] == 0 and is_generated(out / "README.md")  # ours: replaced
    (out / "README.md").write_text("---\nlicense: mit\n---\nmy card\n")  # the user edits it
    code, _, err = run_cli([*args, "--force"], capsys)
    assert code == 0 and "kept your README.md" in err
    assert (out / "README.md").read_text() == "---\nlicense: mit\n---\nmy card\n"


def test_run_facts_render_the_hub_metadata():
    """What a run's best/ card says, from its finetune_config.json and metrics.json."""
    from huggingface_hub import ModelCard

    from whisper_ft.models.card import generated_facts, render_card, run_facts

    run_config = {
        "base_model": "base", "method": "lora", "freeze_encoder": False,
        "lora": {"r": 32, "alpha": 64.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
                 "encoder_layers": 2, "use_adalora": False, "adalora_target_r": 8},
        "data": {"train_data": "dataset/train.jsonl", "test_data": ["domain=dataset/test.jsonl", "general=gen.jsonl"],
                 "task": "transcribe", "replay_data": "general.jsonl", "replay_ratio": 0.2, "empty_audio_ratio": 0.1},
        "train": {"learning_rate": 5e-4, "max_steps": 40, "kl_to_base": 1.0, "seed": 42},
        "resolved": {"base_model": "base", "base_hub_id": "openai/whisper-base", "train_utterances": 311,
                     "train_hours": 0.55, "train_languages": {"zh": 311}, "hf_path": "/nowhere"},
    }
    metrics = {"metric": "domain_cer", "step": 40, "eval_domain_cer": 0.092, "eval_domain_decoded": 40,
               "eval_general_wer": 0.05, "eval_general_decoded": 12}
    facts = run_facts(run_config, metrics, kind="adapter", name="whisper-base-best")
    text = render_card(facts)
    card = ModelCard(text)
    meta = card.data.to_dict()
    assert meta["base_model"] == "openai/whisper-base" and meta["license"] == "apache-2.0"
    assert meta["language"] == ["zh"] and meta["library_name"] == "peft" and "lora" in meta["tags"]
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("domain", "cer"): 9.2, ("general", "wer"): 5.0}
    for expected in ("| 311 | 0.55 | zh (311) | `dataset/train.jsonl` |", "| lora_encoder_layers | 2 |",
                     "- `--kl_to_base` 1.0", "- `--replay_ratio` 0.2", "- `--empty_audio_ratio` 0.1",
                     "| domain | dataset/test.jsonl | CER | 9.20 | 40 |"):
        assert expected in text, expected
    assert generated_facts_roundtrip(text, facts, generated_facts)


def generated_facts_roundtrip(text: str, facts: dict, generated_facts) -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "README.md").write_text(text)
        return generated_facts(Path(d) / "README.md") == json.loads(json.dumps(facts))


@pytest.mark.slow
def test_convert_push_to_hub(tiny_model_dir, tmp_path):
    """`convert --push_to_hub`: the converted folder arrives whole; a bad repository name fails before converting."""
    with FakeHub(token=TOKEN) as hub:
        code, _, err = push_cli("convert", "--model", tiny_model_dir, "--output_dir", tmp_path / "ct2",
                                "--quantization", "float32", "--push_to_hub", "a/b/c", endpoint=hub.endpoint,
                                home=tmp_path)
        assert code == 1 and not (tmp_path / "ct2").exists() and hub.repos == {}, err
        code, out, err = push_cli("convert", "--model", tiny_model_dir, "--output_dir", tmp_path / "ct2",
                                  "--quantization", "float32", "--push_to_hub", "me/tiny-ct2", endpoint=hub.endpoint,
                                  home=tmp_path)
        assert code == 0, err
        converted = Path(out.strip().splitlines()[0])
        assert converted == tmp_path / "ct2"
        assert hub.repos["me/tiny-ct2"]["files"] == files_of(converted)
    assert card_of(converted).data.to_dict()["library_name"] == "ctranslate2"


@pytest.mark.slow
def test_finetune_push_to_hub(tiny_model_dir, tmp_path, make_wav):
    """`finetune --push_to_hub`: best/ (adapter and card) arrives after the run; a missing token fails before training."""
    make_wav("ok.wav", 1.0)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"audio": {"path": str(tmp_path / "ok.wav")}, "sentence": "hi", "duration": 1.0,
                                    "language": "en"}) + "\n")
    run = ["finetune", "--base_model", tiny_model_dir, "--train_data", manifest, "--test_data", manifest,
           "--output_dir", tmp_path / "runs", "--max_steps", "1", "--warmup_steps", "0", "--num_workers", "0",
           "--report_to", "none", "--push_to_hub", "me/tiny-lora"]
    with FakeHub(token=TOKEN) as hub:
        code, _, err = push_cli(*run, token=None, endpoint=hub.endpoint, home=tmp_path)
        assert code == 1 and "no Hugging Face token" in err and not (tmp_path / "runs").exists()
        code, out, err = push_cli(*run, endpoint=hub.endpoint, home=tmp_path)
        assert code == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        best = Path(summary["best_dir"])
        assert summary["pushed"]["repo_id"] == "me/tiny-lora"
        assert hub.repos["me/tiny-lora"]["files"] == files_of(best)
    assert (best / "adapter_config.json").is_file() and card_of(best).data.to_dict()["library_name"] == "peft"

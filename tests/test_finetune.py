"""`whisper-ft finetune`: overfitting, resume, AdaLoRA, timestamps, data order, bad inputs.

Everything runs on CPU with a tiny random Whisper. The shared `tiny_model_dir` is initialised
like a real model's start (std 0.02 in 64 dimensions): its logits and its input signal are too
small for LoRA to overfit in a few dozen steps, so the training tests use a copy re-initialised
with std 0.2 (see `trainable_tiny_dir`). Its byte-level tokenizer also writes Whisper's leading
space as a token of its own, which the generation config suppresses at the first position (real
Whisper merges the space into the first word's token); the copy suppresses only <|endoftext|>.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from whisper_ft.cli import main
from whisper_ft.core.errors import DataError, ModelNotFoundError, WhisperFtError
from whisper_ft.training.config import DataSettings, FinetuneConfig, LoraSettings, TrainSettings

TEXTS = ["hello world", "good morning", "the cat sat", "blue sky"]


@pytest.fixture(scope="session")
def trainable_tiny_dir(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from whisper_ft.models.io import save_whisper_folder

    model = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and "encoder.embed_positions" not in name:  # keep the sinusoids
                p.normal_(0.0, 0.2, generator=gen)
    model.generation_config.begin_suppress_tokens = [model.generation_config.eos_token_id]
    processor = WhisperProcessor.from_pretrained(str(tiny_model_dir))
    return save_whisper_folder(tmp_path_factory.mktemp("trainable") / "tiny-trainable", model, processor)


def write_tone(path: Path, seconds: float, freq: float) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


@pytest.fixture(scope="module")
def four_utterances(tmp_path_factory) -> Path:
    """dataset/{train,test}.jsonl: four distinct tones (6-7.5 s) with short English texts and times."""
    root = tmp_path_factory.mktemp("data")
    records = []
    for i, text in enumerate(TEXTS):
        seconds = 6.0 + 0.5 * i
        write_tone(root / f"u{i}.wav", seconds, 300 + 400 * i)
        first, rest = text.split(" ", 1)
        records.append({
            "audio": {"path": f"u{i}.wav"}, "sentence": text, "duration": seconds, "language": "en",
            "id": f"u{i}",
            "sentences": [{"start": 0.0, "end": 1.23, "text": first}, {"start": 1.23, "end": 2.5, "text": rest}],
        })
    manifest = "".join(json.dumps(r) + "\n" for r in records)
    (root / "train.jsonl").write_text(manifest)
    (root / "test.jsonl").write_text(manifest)
    return root


def make_config(model_dir, data_dir, out_dir, *, lora=None, train=None, data=None) -> FinetuneConfig:
    return FinetuneConfig(
        base_model=str(model_dir),
        output_dir=str(out_dir),
        lora=LoraSettings(**{"r": 16, "alpha": 32, "dropout": 0.0, **(lora or {})}),
        data=DataSettings(**{"train_data": str(data_dir / "train.jsonl"), "test_data": str(data_dir / "test.jsonl"),
                             "num_workers": 0, **(data or {})}),
        train=TrainSettings(**{"learning_rate": 1e-2, "warmup_steps": 0, "per_device_train_batch_size": 4,
                               "per_device_eval_batch_size": 4, "logging_steps": 1, "num_threads": 1,
                               **(train or {})}),
    )


@pytest.fixture(scope="module")
def overfit_run(trainable_tiny_dir, four_utterances, tmp_path_factory):
    from whisper_ft.training.trainer import finetune

    out = tmp_path_factory.mktemp("runs")
    config = make_config(trainable_tiny_dir, four_utterances, out,
                         train={"max_steps": 30, "eval_steps": 15, "save_steps": 15, "save_total_limit": 1})
    return finetune(config), config


@pytest.mark.slow
def test_loss_falls_and_model_overfits_exact_text(overfit_run):
    import torch

    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.models.loading import load_whisper

    result, config = overfit_run
    assert not result.interrupted and result.global_step == 30
    state = json.loads((result.run_dir / "checkpoint-30" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    # Chosen by WER (English), decoded for real: exact transcripts.
    assert result.best_metrics["metric"] == "wer"
    assert result.best_metrics["eval_wer"] == 0.0 and result.best_metrics["eval_cer"] == 0.0
    loaded = load_whisper(result.best_dir)
    assert loaded.is_adapter
    feats = np.stack([
        loaded.processor.feature_extractor(load_audio(Path(config.data.train_data).parent / f"u{i}.wav"),
                                           sampling_rate=16000, return_tensors="np")["input_features"][0]
        for i in range(4)
    ])
    hyps = generate_texts(loaded.model, loaded.processor, torch.from_numpy(feats), language="en")
    assert hyps == TEXTS


def test_run_folder_layout(overfit_run, trainable_tiny_dir):
    result, config = overfit_run
    run = result.run_dir
    assert run == Path(config.output_dir) / "tiny-trainable"
    best = run / "best"
    for name in ("adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json", "tokenizer.json",
                 "finetune_config.json", "metrics.json"):
        assert (best / name).is_file(), name
    adapter = json.loads((best / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(trainable_tiny_dir).resolve())
    saved = FinetuneConfig.from_dict({k: v for k, v in json.loads((best / "finetune_config.json").read_text()).items()
                                      if k != "resolved"})
    assert saved.lora.r == 16 and saved.train.max_steps == 30
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["metric"] == "wer" and metrics["step"] in (15, 30)
    # save_total_limit=1 keeps the newest checkpoint (and the best one, if different).
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    assert "checkpoint-30" in checkpoints and len(checkpoints) <= 2
    assert (run / "checkpoint-30" / "preprocessor_config.json").is_file()
    assert list((run / "runs").rglob("events.out.tfevents*")), "no TensorBoard logs"
    assert not list(run.glob(".best.tmp-*")), "staging folder left behind"


@pytest.mark.slow
def test_resume_continues_same_step_and_data_order(trainable_tiny_dir, four_utterances, tmp_path, monkeypatch):
    """Ctrl-C -> checkpoint; resume (latest) -> same batches and same weights as an uninterrupted run."""
    import os

    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from whisper_ft.training.trainer import WhisperLoraTrainer, finetune

    trained: list[list[tuple]] = []  # the label rows of every batch actually trained on
    original = WhisperLoraTrainer.training_step

    def recording(self, model, inputs, *args, **kwargs):
        trained.append([tuple(row) for row in inputs["labels"].tolist()])
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(WhisperLoraTrainer, "training_step", recording)
    # Batches of one: the order within an epoch is random (the longest utterance first).
    settings = {"max_steps": 6, "save_steps": 100, "eval_steps": 100, "per_device_train_batch_size": 1,
                "learning_rate": 5e-3}
    lora = {"dropout": 0.1}  # dropout draws random numbers: the RNG state must be restored too

    full = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path / "a", lora=lora, train=settings))
    full_order, trained[:] = list(trained), []

    class CtrlCAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    cut = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path / "b", lora=lora, train=settings),
                   callbacks=[CtrlCAtStep2()])
    assert cut.interrupted and cut.last_checkpoint is not None
    stopped = cut.global_step
    assert 2 <= stopped < 6 and cut.last_checkpoint.name == f"checkpoint-{stopped}"
    first_part, trained[:] = list(trained), []

    resumed = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path / "b", lora=lora,
                                   train={**settings, "resume_from_checkpoint": "latest"}))
    assert not resumed.interrupted and resumed.global_step == 6
    assert len(first_part) == stopped and len(full_order) == 6
    assert first_part + trained == full_order
    assert len(set(map(tuple, full_order[:4]))) == 4  # all four utterances in the first epoch
    state = json.loads((resumed.run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == list(range(1, 7))
    a = load_file(str(full.run_dir / "checkpoint-6" / "adapter_model.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoint-6" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6), k


@pytest.mark.slow
def test_adalora_reallocates_ranks_and_resumes(trainable_tiny_dir, four_utterances, tmp_path, monkeypatch):
    import os

    from peft.tuners.adalora import AdaLoraModel
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from whisper_ft.training.trainer import finetune

    calls = []
    original = AdaLoraModel.update_and_allocate

    def spy(self, global_step):
        calls.append(global_step)
        return original(self, global_step)

    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", spy)
    settings = {"max_steps": 12, "eval_steps": 100, "save_steps": 100, "per_device_train_batch_size": 2,
                "learning_rate": 5e-3, "gradient_checkpointing": True}  # (checkpointing exercised here too)
    lora = {"use_adalora": True, "r": 8, "adalora_target_r": 2}

    class CtrlCAtStep6(TrainerCallback):  # stop in the middle of the rank budgeting phase (steps 2-9)
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                os.kill(os.getpid(), signal.SIGINT)

    cut = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, lora=lora, train=settings),
                   callbacks=[CtrlCAtStep6()])
    assert cut.interrupted
    # The checkpoint keeps full-rank tensors (what the optimizer state fits) and the ranks beside them.
    pattern = json.loads((cut.last_checkpoint / "adalora_rank_pattern.json").read_text())
    assert 2 * len(pattern) <= sum(map(sum, pattern.values())) < 8 * len(pattern)
    result = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, lora=lora,
                                  train={**settings, "resume_from_checkpoint": "latest"}))
    assert result.global_step == 12 and not result.interrupted
    assert calls == list(range(12))  # every optimizer step exactly once (0-based), across the resume
    adapter = json.loads((result.best_dir / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "ADALORA" and adapter["total_step"] == 12
    ranks = {name: sum(mask) for name, mask in adapter["rank_pattern"].items()}
    n_modules = len(ranks)
    assert n_modules == 2 * 2 * 6 + 2 * 4  # encoder 2x6, decoder 2x(6 + 4 cross-attention)
    assert sum(ranks.values()) == 2 * n_modules  # the final budget: target_r per module on average
    assert len(set(ranks.values())) > 1, "ranks were cut uniformly, not reallocated"
    weights = load_file(str(result.best_dir / "adapter_model.safetensors"))
    for name, mask in adapter["rank_pattern"].items():  # peft saves AdaLoRA cut to the final ranks
        assert weights[f"base_model.model.{name}"].numel() == sum(mask), name
    metrics = json.loads((result.best_dir / "metrics.json").read_text())
    assert sum(metrics["adalora_ranks"].values()) == 2 * n_modules
    # Saved cut to the final ranks, the adapter reloads to the model that was evaluated: decoding the
    # test set again gives the same error rates, and merging it (rank-0 modules too) keeps the logits.
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.models.loading import load_whisper
    from whisper_ft.training.data import SpeechDataset, build_samples
    from whisper_ft.training.evaluation import evaluate_by_decoding
    from whisper_ft.training.labels import LabelBuilder
    from whisper_ft.trainkit.manifest import check_manifest
    from whisper_ft.workflows.merge import merge_lora

    loaded = load_whisper(result.best_dir)
    builder = LabelBuilder.from_tokenizer(loaded.processor.tokenizer)
    pairs, report = check_manifest(four_utterances / "test.jsonl", name="test", language=None, min_duration=0.5,
                                   max_duration=30)
    samples = build_samples(pairs, report, loaded.processor.tokenizer, builder, timestamps=False)
    dataset = SpeechDataset(samples, builder, loaded.processor.feature_extractor, training=False)
    again = evaluate_by_decoding(loaded.model, loaded.processor, dataset, task="transcribe", batch_size=4)
    assert (again.cer, again.wer) == (metrics["eval_cer"], metrics["eval_wer"])
    merged = WhisperForConditionalGeneration.from_pretrained(
        str(merge_lora(result.best_dir, tmp_path / "merged").output_dir)).eval()
    features = torch.from_numpy(np.stack([dataset[i]["input_features"] for i in range(4)]))
    prompt = torch.tensor([builder.prefix("en", timestamps=False)] * 4)
    with torch.no_grad():
        want = loaded.model(input_features=features, decoder_input_ids=prompt).logits
        got = merged(input_features=features, decoder_input_ids=prompt).logits
    assert (got - want).abs().max().item() < 1e-4


def test_timestamp_labels_decode_back_to_the_given_times(tiny_model_dir):
    from transformers import WhisperTokenizer

    from whisper_ft.training.labels import LabelBuilder, encode_text

    tok = WhisperTokenizer.from_pretrained(str(tiny_model_dir))
    builder = LabelBuilder.from_tokenizer(tok, "transcribe")
    sentences = [(0.0, 1.234, "hello"), (1.234, 2.5, "big world"), (3.011, 30.5, "end")]
    ids = encode_text(tok, [s[2] for s in sentences])
    labels = builder.timestamped("en", [(s, e, i) for (s, e, _), i in zip(sentences, ids)])
    vocab = tok.get_vocab()
    assert labels[:3] == [vocab["<|startoftranscript|>"], vocab["<|en|>"], vocab["<|transcribe|>"]]
    assert vocab["<|notimestamps|>"] not in labels and labels[-1] == vocab["<|endoftext|>"]
    times = [builder.token_time(t) for t in labels if builder.token_time(t) is not None]
    assert times == [0.0, 1.24, 1.24, 2.5, 3.02, 30.0]  # nearest 0.02 s step, clamped at 30 s
    # Read back independently of the builder: token strings, and the text between each pair.
    tokens = tok.convert_ids_to_tokens(labels[3:-1])
    segments, i = [], 0
    while i < len(tokens):
        j = next(k for k in range(i + 1, len(tokens)) if tokens[k].startswith("<|"))
        segments.append((float(tokens[i][2:-2]), tok.decode(labels[3 + i + 1 : 3 + j]), float(tokens[j][2:-2])))
        i = j + 1
    # This byte-level tokenizer writes the leading space as a bare token of its own, which decoders
    # never emit first: it is left out (whisper-base keeps it where it merges, " hello").
    assert segments == [(0.0, "hello", 1.24), (1.24, "big world", 2.5), (3.02, "end", 30.0)]
    plain = builder.plain("en", encode_text(tok, ["hello"])[0])
    assert plain[3] == vocab["<|notimestamps|>"] and tok.decode(plain[4:-1]) == "hello"


def test_about_half_of_samples_get_timestamps_and_speed_rescales_times(tiny_model_dir, four_utterances):
    from transformers import WhisperProcessor

    from whisper_ft.training.augment import Augmentation, Augmenter
    from whisper_ft.training.data import SpeechDataset, build_samples
    from whisper_ft.training.labels import LabelBuilder
    from whisper_ft.trainkit.manifest import check_manifest

    processor = WhisperProcessor.from_pretrained(str(tiny_model_dir))
    builder = LabelBuilder.from_tokenizer(processor.tokenizer)
    pairs, report = check_manifest(four_utterances / "train.jsonl", name="train", language=None,
                                   min_duration=0.5, max_duration=30)
    samples = build_samples(pairs, report, processor.tokenizer, builder, timestamps=True)
    ds = SpeechDataset(samples, builder, processor.feature_extractor, training=True, seed=3)
    flags = [builder.no_timestamps not in ds[(i, epoch)]["labels"] for epoch in range(10) for i in range(4)]
    assert 10 <= sum(flags) <= 30  # about half of 40
    assert [ds[(i, 1)]["labels"] for i in range(4)] == [ds[(i, 1)]["labels"] for i in range(4)]  # deterministic

    speed = Augmenter([Augmentation("speed", 1.0, {"min_speed_rate": 1.25, "max_speed_rate": 1.25, "num_rates": 1})])
    audio = np.zeros(16000 * 5, np.float32)
    out, segs = speed(audio, [(1.0, 2.5, "x")], np.random.default_rng(0))
    assert abs(len(out) - 16000 * 4) < 50 and segs == [(0.8, 2.0, "x")]


def test_sampler_is_deterministic_complete_and_length_grouped():
    from whisper_ft.trainkit.sampler import DurationGroupedSampler

    durations = list(np.random.default_rng(0).uniform(1, 20, size=103))
    sampler = DurationGroupedSampler(durations, batch_size=8, seed=1, group_batches=12)
    order = sampler.order(0)
    assert sorted(order) == list(range(103)) and order == sampler.order(0) and order != sampler.order(1)
    assert max(durations[i] for i in order[:8]) == max(durations)  # the longest batch first
    spread = np.mean([np.ptp([durations[i] for i in order[k:k + 8]]) for k in range(0, 96, 8)])
    assert spread < 4  # random batches would spread over ~15 s
    sampler.set_epoch(2)
    assert [i for i, e in sampler] == sampler.order(2) and {e for _, e in sampler} == {2}


def test_over_long_labels_are_dropped_and_counted(tiny_model_dir, tmp_path, make_wav):
    from transformers import WhisperProcessor

    from whisper_ft.training.data import build_samples
    from whisper_ft.training.labels import LabelBuilder
    from whisper_ft.trainkit.manifest import check_manifest

    make_wav("a.wav", 1.0)
    rows = [{"audio": {"path": "a.wav"}, "sentence": s, "duration": 1.0, "language": "en"}
            for s in ("short", "x" * 500, "y" * 445, "z" * 444)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    processor = WhisperProcessor.from_pretrained(str(tiny_model_dir))
    builder = LabelBuilder.from_tokenizer(processor.tokenizer)
    pairs, report = check_manifest(tmp_path / "m.jsonl", name="train", language=None, min_duration=0.5,
                                   max_duration=30)
    samples = build_samples(pairs, report, processor.tokenizer, builder, timestamps=False)
    # 445 byte tokens (the bare leading space is left out) + 3 prompt tokens + <|endoftext|> = 449 > 448;
    # 444 characters make exactly 448.
    assert [s.utterance.sentence[:1] for s in samples] == ["s", "z"]
    assert report.too_many_tokens == 2 and "2 with labels over 448 tokens" in report.summary()


# ---- bad inputs: one line, exit 1, before any training -----------------------------------------


@pytest.fixture
def good_manifest(tmp_path, make_wav) -> Path:
    make_wav("ok.wav", 1.0)
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps({"audio": {"path": "ok.wav"}, "sentence": "hi", "duration": 1.0, "language": "en"}) + "\n")
    return path


@pytest.mark.parametrize("case, expected", [
    ("empty", "manifest is empty"),
    ("invalid", "invalid manifest record"),
    ("missing_audio", "1 of 1 utterances have missing audio files"),
    ("unknown_language", "unknown language 'klingon'"),
    ("no_language", "have no \"language\""),
    ("missing_manifest", "manifest not found"),
])
def test_bad_data_gives_one_clear_line(case, expected, tiny_model_dir, tmp_path, good_manifest, capsys):
    bad = tmp_path / f"{case}.jsonl"
    rec = {"audio": {"path": "ok.wav"}, "sentence": "hi", "duration": 1.0, "language": "en"}
    if case == "empty":
        bad.write_text("\n")
    elif case == "invalid":
        bad.write_text('{"audio": "ok.wav", "sentence": "hi", "duration": 1.0}\n{not json\n')
    elif case == "missing_audio":
        bad.write_text(json.dumps({**rec, "audio": {"path": "nope.wav"}}) + "\n")
    elif case == "unknown_language":
        bad.write_text(json.dumps({**rec, "language": "klingon"}) + "\n")
    elif case == "no_language":
        bad.write_text(json.dumps({k: v for k, v in rec.items() if k != "language"}) + "\n")
    code, out, err = run_cli(["finetune", "--base_model", str(tiny_model_dir), "--train_data", str(bad),
                              "--test_data", str(good_manifest), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, err
    assert not (tmp_path / "out").exists()  # nothing started


def test_bad_model_and_options_fail_before_training(tiny_model_dir, good_manifest, tmp_path, capsys):
    common = ["--train_data", str(good_manifest), "--test_data", str(good_manifest), "--output_dir", str(tmp_path / "o")]
    code, _, err = run_cli(["finetune", "--base_model", "no-such-model", *common], capsys)
    assert code == 1 and "model 'no-such-model' not found" in err
    code, _, err = run_cli(["finetune", "--base_model", "openai/whisper-tiny", *common], capsys)
    assert code == 1 and "offline" in err  # tests run with HF_HUB_OFFLINE=1
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        code, _, err = run_cli(["finetune", "--base_model", str(tiny_model_dir), "--use_8bit", *common], capsys)
        needs = "a CUDA GPU" if not torch.cuda.is_available() else "bitsandbytes: pip install bitsandbytes"
        assert code == 1 and f"--use_8bit needs {needs}" in err
    else:  # what --use_8bit does where it can: the frozen base is loaded with 8-bit linear layers
        from whisper_ft.training.model import load_base_for_training, resolve_base_model

        model = load_base_for_training(resolve_base_model(str(tiny_model_dir)), TrainSettings(use_8bit=True))
        assert any(type(m).__name__ == "Linear8bitLt" for m in model.modules())
    code, _, err = run_cli(["finetune", "--base_model", str(tiny_model_dir), "--target_modules", "q_proj,nope",
                            "--max_steps", "1", *common], capsys)
    assert code == 1 and "--target_modules: nope not in this model" in err
    code, _, err = run_cli(["finetune", "--language", "xx", *common], capsys)
    assert code == 1 and "unknown language 'xx'" in err
    code, _, err = run_cli(["finetune", "--base_model", str(tiny_model_dir), "--resume_from_checkpoint", *common],
                           capsys)
    assert code == 1 and "no checkpoint-N folder in" in err  # bare flag = latest
    code, _, err = run_cli(["finetune", "--base_model", str(tiny_model_dir), "--resume_from_checkpoint",
                            str(tmp_path / "checkpoint-7"), *common], capsys)
    assert code == 1 and "checkpoint-7 is not a checkpoint folder" in err
    assert not (tmp_path / "o").exists()


def test_default_data_paths_are_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["finetune", "--base_model", "openai/whisper-tiny"], capsys)
    assert "no --train_data given: using dataset/train.jsonl" in err
    assert code == 1 and "manifest not found: dataset/train.jsonl" in err


def test_config_validation_messages():
    with pytest.raises(WhisperFtError, match="--lora_r must be positive"):
        LoraSettings(r=0)
    with pytest.raises(WhisperFtError, match="--metric_for_best"):
        TrainSettings(metric_for_best="bleu")
    with pytest.raises(WhisperFtError, match="--fp16 and --bf16"):
        TrainSettings(fp16=True, bf16=True)
    with pytest.raises(WhisperFtError, match="--max_duration is at most 30"):
        DataSettings(max_duration=40)
    assert LoraSettings(target_modules="q_proj, v_proj").target_modules == ("q_proj", "v_proj")
    assert FinetuneConfig(base_model="openai/whisper-base").run_name == "whisper-base"
    assert FinetuneConfig(base_model="base").run_name == "whisper-base"
    assert FinetuneConfig(base_model="/x/my-model/").run_name == "my-model"


def test_bad_augment_config(tmp_path):
    from whisper_ft.training.augment import load_augmenter

    cfg = tmp_path / "aug.json"
    cfg.write_text(json.dumps([{"type": "reverb", "prob": 0.5}]))
    with pytest.raises(DataError, match="must be one of speed, shift, volume, noise"):
        load_augmenter(cfg)
    cfg.write_text(json.dumps([{"type": "noise", "prob": 0.5, "params": {"noise_dir": str(tmp_path / "none")}}]))
    with pytest.raises(DataError, match="no audio files"):
        load_augmenter(cfg)
    assert not load_augmenter(None)


def test_adapter_as_base_model_is_refused(tmp_path):
    from whisper_ft.training.model import resolve_base_model

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="is a LoRA adapter, not a base model"):
        resolve_base_model(str(tmp_path))


def test_augmentation_is_deterministic_and_moves_times(tmp_path):
    import soundfile as sf

    from whisper_ft.training.augment import load_augmenter, time_shift

    (tmp_path / "noise").mkdir()
    sf.write(str(tmp_path / "noise" / "n.wav"), np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32),
             16000)
    cfg = tmp_path / "aug.json"
    cfg.write_text(json.dumps([
        {"type": "speed", "prob": 1.0, "params": {"min_speed_rate": 0.9, "max_speed_rate": 1.1, "num_rates": 3}},
        {"type": "shift", "prob": 1.0, "params": {"min_shift_ms": -50, "max_shift_ms": 50}},
        {"type": "volume", "prob": 1.0},
        {"type": "noise", "prob": 1.0, "params": {"noise_dir": "noise", "min_snr_dB": 10, "max_snr_dB": 20}},
    ]))
    augment = load_augmenter(cfg)  # noise_dir relative to the config file
    audio = (0.3 * np.sin(np.arange(32000) / 10)).astype(np.float32)
    original = audio.copy()
    segs = [(0.5, 1.5, "a")]
    a1, s1 = augment(audio, segs, np.random.default_rng([7, 0, 1]))
    a2, s2 = augment(audio, segs, np.random.default_rng([7, 0, 1]))
    a3, _ = augment(audio, segs, np.random.default_rng([7, 1, 1]))
    assert np.array_equal(a1, a2) and s1 == s2 and not (len(a1) == len(a3) and np.array_equal(a1, a3))
    assert np.array_equal(audio, original)  # the input is never modified
    out, moved = time_shift(audio, segs, 0.25)
    assert len(out) == len(audio) + 4000 and moved == [(0.75, 1.75, "a")]
    out, moved = time_shift(audio, segs, -0.75)
    assert len(out) == len(audio) - 12000 and moved == [(0.0, 0.75, "a")]


@pytest.mark.slow
def test_cli_finetune_then_merge(trainable_tiny_dir, four_utterances, tmp_path, capsys):
    """The CLI end to end, with a DataLoader worker: results on stdout, logs and progress on stderr."""
    main(["finetune", "--base_model", str(trainable_tiny_dir), "--train_data", str(four_utterances / "train.jsonl"),
          "--test_data", str(four_utterances / "test.jsonl"), "--output_dir", str(tmp_path / "models"),
          "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "2",
          "--num_workers", "1", "--num_threads", "1", "--metric_for_best", "cer", "--timestamps",
          "--method", "adalora", "--lora_r", "4"])
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["global_step"] == 2 and result["best_metrics"]["metric"] == "cer"
    assert "training" in out.err and "best checkpoint chosen by cer" in out.err
    assert "method adalora, learning rate 0.001 (the default for this method" in out.err
    best = Path(result["best_dir"])
    assert json.loads((best / "adapter_config.json").read_text())["peft_type"] == "ADALORA"
    main(["merge", "--lora_model", result["best_dir"], "--output_dir", str(tmp_path / "models"),
          "--dtype", "float16"])
    out = capsys.readouterr()
    merged = tmp_path / "models" / "tiny-trainable-finetune"
    assert out.out.strip() == str(merged)
    # Both folders carry a model card: the adapter's, and the merged one's with the merge step added.
    from huggingface_hub import ModelCard

    adapter_card, merged_card = ModelCard.load(best / "README.md"), ModelCard.load(merged / "README.md")
    assert adapter_card.data.library_name == "peft" and "adalora" in adapter_card.data.tags
    assert merged_card.data.library_name == "transformers" and merged_card.data.language == ["en"]
    assert "with whisper-ft (--method adalora" in merged_card.text
    assert "adapter merged into the base (float16)" in merged_card.text and "| 4 | 0.01 | en (4) |" in merged_card.text
    # the adapter's evaluation is in the adapter's model-index; the merged card shows it as the source's
    assert {r.metric_type for r in adapter_card.data.eval_results} == {"cer", "wer"}
    assert merged_card.data.eval_results is None and "### Measured on" in merged_card.text


def test_latest_checkpoint_skips_incomplete_saves(tmp_path, capsys):
    from whisper_ft.training.trainer import resolve_checkpoint
    from whisper_ft.trainkit.run import CHECKPOINT_MARKER

    # 12: the save died before trainer_state.json; 14: it died after (a truncated tokenizer.json, no marker)
    for step, state, marker in ((2, True, True), (10, True, True), (12, False, False), (14, True, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state:
            (folder / "trainer_state.json").write_text("{}")
        if marker:
            (folder / CHECKPOINT_MARKER).write_text("{}")
    (tmp_path / "checkpoint-14" / "tokenizer.json").write_text('{"trunc')
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-10"
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "checkpoint-14" in line] and all("skipping" in line for line in err)
    assert resolve_checkpoint(None, tmp_path) is None
    assert resolve_checkpoint(str(tmp_path / "checkpoint-2"), tmp_path) == tmp_path / "checkpoint-2"
    with pytest.raises(WhisperFtError, match="not a checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "checkpoint-12"), tmp_path)
    with pytest.raises(WhisperFtError, match="checkpoint-14 is incomplete"):
        resolve_checkpoint(str(tmp_path / "checkpoint-14"), tmp_path)


def test_lora_encoder_layers_adapts_only_the_top_layers_and_saves_no_lower_activations(tiny_model_dir):
    """--lora_encoder_layers N: adapters in the decoder and the top N encoder layers only; the
    frozen layers below record no autograd graph (that is where the memory of 30 s windows goes)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.training.model import adapter_targets, add_adapters

    base = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir))
    n = base.config.encoder_layers
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, encoder_layers=1)
    targets = adapter_targets(base, lora)
    enc = {t for t in targets if ".encoder." in f".{t}."}
    assert enc and all(f"encoder.layers.{n - 1}." in t for t in enc)
    assert any(".decoder." in f".{t}." for t in targets)
    assert adapter_targets(base, LoraSettings(encoder_layers=None)) == list(LoraSettings().target_modules)
    assert not {t for t in adapter_targets(base, LoraSettings(encoder_layers=0)) if ".encoder." in f".{t}."}
    with pytest.raises(WhisperFtError, match="encoder layers"):
        adapter_targets(base, LoraSettings(encoder_layers=n + 1))
    with pytest.raises(WhisperFtError, match="--lora_encoder_layers must be 0 or more"):
        LoraSettings(encoder_layers=-1)

    model = add_adapters(base, lora, recorded_name="tiny", total_steps=10)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all(f"encoder.layers.{n - 1}." in t or "decoder" in t for t in trained)
    outputs = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o[0] if isinstance(o, tuple) else o))
             for k, layer in enumerate(model.base_model.model.model.encoder.layers)]
    feats = torch.randn(1, base.config.num_mel_bins, 3000)
    out = model(input_features=feats, labels=torch.tensor([[1, 2, 3]]))
    for h in hooks:
        h.remove()
    assert all(outputs[k].grad_fn is None for k in range(n - 1))  # no graph below the top layer
    assert outputs[n - 1].grad_fn is not None
    out.loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if p.requires_grad)


# ---- issue 10: option ranges, unusable audio, SIGTERM, an interrupt that comes as the run ends ----


@pytest.mark.parametrize("option, value, expected", [
    ("--max_steps", "-5", "--max_steps must be at least 1 (got -5); omit it to train --num_train_epochs epochs"),
    ("--max_steps", "0", "--max_steps must be at least 1 (got 0)"),
    ("--per_device_train_batch_size", "0", "--per_device_train_batch_size must be positive (got 0)"),
    ("--per_device_eval_batch_size", "-1", "--per_device_eval_batch_size must be positive (got -1)"),
    ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be positive (got 0)"),
    ("--eval_steps", "0", "--eval_steps must be positive (got 0)"),
    ("--save_steps", "-10", "--save_steps must be positive (got -10)"),
    ("--num_threads", "0", "--num_threads must be positive (got 0)"),
    ("--num_workers", "-1", "--num_workers must be at least 0 (got -1)"),
    ("--learning_rate", "0", "--learning_rate must be positive (got 0.0)"),
    ("--learning_rate", "-0.001", "--learning_rate must be positive (got -0.001)"),
])
def test_out_of_range_options_are_one_line_errors(option, value, expected, good_manifest, tmp_path, capsys):
    code, out, err = run_cli(["finetune", "--base_model", "base", "--train_data", str(good_manifest),
                              "--test_data", str(good_manifest), "--output_dir", str(tmp_path / "o"),
                              option, value], capsys)
    assert code == 1 and out == "" and err.startswith(f"error: {expected}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_max_steps_minus_one_means_epochs():
    assert TrainSettings(max_steps=-1).max_steps is None
    assert TrainSettings(max_steps=3).max_steps == 3


def _manifest_with_unusable_audio(root: Path) -> Path:
    """Two good clips, then every kind of unusable audio a real manifest has held."""
    write_tone(root / "good0.wav", 2.0, 300)
    write_tone(root / "good1.wav", 2.5, 700)
    (root / "empty.wav").write_bytes(b"")
    (root / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "notes.wav").write_text("this is a text file, not audio\n")
    rec = {"sentence": "hello world", "language": "en"}
    rows = [
        {**rec, "audio": {"path": "good0.wav"}, "duration": 2.0, "id": "good0"},
        {**rec, "audio": {"path": "empty.wav"}, "duration": 1.0, "id": "empty"},
        {**rec, "audio": {"path": "garbage.wav"}, "duration": 1.0, "id": "garbage"},
        {**rec, "audio": {"path": "notes.wav"}, "duration": 1.0, "id": "notes"},
        {**rec, "audio": {"path": "good1.wav", "start_time": 2.0, "end_time": 1.0}, "duration": 1.0, "id": "inverted"},
        {**rec, "audio": {"path": "good1.wav", "start_time": 5.0, "end_time": 7.0}, "duration": 2.0, "id": "past"},
        {**rec, "audio": {"path": "good1.wav"}, "duration": 2.5, "id": "good1"},
    ]
    path = root / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _shards(root: Path) -> Path:
    """root/shards/{a,b}.jsonl (two tones each) and root/extra.jsonl (one): five utterances in three manifests."""
    (root / "shards").mkdir(parents=True)
    for name, keys in (("shards/a", ["a0", "a1"]), ("shards/b", ["b0", "b1"]), ("extra", ["x0"])):
        rows = []
        for i, key in enumerate(keys):
            write_tone(root / f"{key}.wav", 1.0 + i, 300 + 100 * len(rows))
            rows.append({"audio": {"path": str(root / f"{key}.wav")}, "sentence": "hello", "duration": 1.0 + i,
                         "language": "en", "id": key})
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_train_data_reads_several_manifests_globs_and_shard_folders_as_one_set(tmp_path):
    from whisper_ft.trainkit.manifest import check_manifest

    root = _shards(tmp_path)
    a, b, extra = root / "shards" / "a.jsonl", root / "shards" / "b.jsonl", root / "extra.jsonl"
    limits = {"name": "train", "language": None, "min_duration": 0.5, "max_duration": 30}
    for spec in ([str(a), str(b), str(extra)], f"{a},{b}, {extra}", [f"{root}/shards/*.jsonl", str(extra)],
                 [str(root / "shards"), str(extra)], [f"{root}/shards", f"{a},{extra}"]):
        pairs, report = check_manifest(spec, **limits)
        assert [u.key for u, _ in pairs] == ["a0", "a1", "b0", "b1", "x0"], spec
        assert report.total == 5 and str(report.path) == f"{a} + 2 more"
    pairs, report = check_manifest(str(a), **limits)  # one manifest: as before
    assert len(pairs) == 2 and report.path == a
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="folder without"):
        check_manifest(str(root / "empty"), **limits)
    with pytest.raises(DataError, match="no manifest matches"):
        check_manifest(f"{root}/nothing-*.jsonl", **limits)


def test_finetune_cli_takes_repeated_and_comma_separated_train_data(trainable_tiny_dir, tmp_path, monkeypatch,
                                                                     capsys):
    from whisper_ft.training import model as training_model

    def loading(*args, **kwargs):
        raise WhisperFtError("stopped before loading the model")

    monkeypatch.setattr(training_model, "load_base_for_training", loading)
    root = _shards(tmp_path)
    code, _, err = run_cli(["finetune", "--base_model", str(trainable_tiny_dir), "--train_data",
                            f"{root}/shards/a.jsonl,{root}/shards/b.jsonl", "--train_data", str(root / "extra.jsonl"), "--test_data", str(root / "extra.jsonl"),
                            "--output_dir", str(tmp_path / "out"), "--num_workers", "0"], capsys)
    assert code == 1 and "stopped before loading the model" in err
    assert f"train data {root / 'shards' / 'a.jsonl'} + 2 more: 5 of 5 utterances kept" in err


def test_finetune_options_come_from_the_settings_fields(monkeypatch, capsys):
    """The generated command: no option given -> the settings' own defaults; each flag reaches its field."""
    from whisper_ft.training import trainer

    seen = []

    def finetune(config, **kwargs):
        seen.append((config, kwargs))
        raise WhisperFtError("captured")

    monkeypatch.setattr(trainer, "finetune", finetune)
    assert run_cli(["finetune"], capsys)[0] == 1
    config, kwargs = seen.pop()
    assert config == FinetuneConfig() and kwargs == {"auto_run_name": True}
    assert run_cli(["finetune", "--lora_r", "8", "--lora_encoder_layers", "2", "--target_modules", "q_proj, v_proj",
                    "--test_data", "a=a.jsonl", "--test_data", "b=b.jsonl", "--max_steps", "7", "--fp16",
                    "--output_dir", "runs", "--resume_from_checkpoint"], capsys)[0] == 1
    config, kwargs = seen.pop()
    assert (config.lora.r, config.lora.encoder_layers, config.lora.target_modules) == (8, 2, ("q_proj", "v_proj"))
    assert config.data.test_data == ["a=a.jsonl", "b=b.jsonl"] and config.data.train_data == "dataset/train.jsonl"
    assert (config.train.max_steps, config.train.fp16, config.train.resume_from_checkpoint) == (7, True, "latest")
    assert config.output_dir == "runs" and kwargs == {"auto_run_name": False}
    assert "--weight_decay" not in run_cli(["finetune", "--help"], capsys)[1]  # left at its default


def test_unusable_audio_is_skipped_counted_and_named(tmp_path, capsys):
    from whisper_ft.trainkit.manifest import check_manifest

    path = _manifest_with_unusable_audio(tmp_path)
    pairs, report = check_manifest(path, name="train", language=None, min_duration=0.5, max_duration=30)
    assert [u.key for u, _ in pairs] == ["good0", "good1"]
    bad = dict((Path(file).name, why) for file, why in report.bad_audio)
    assert len(report.bad_audio) == 5
    assert "empty" in bad["empty.wav"]
    assert "cannot decode" in bad["garbage.wav"] and "cannot decode" in bad["notes.wav"]
    reasons = [why for file, why in report.bad_audio if file.endswith("good1.wav")]
    assert reasons == ["slice ends before it starts (2.00..1.00 s)",
                       "slice outside the file (5.00..7.00 s, file is 2.50 s)"]
    assert "5 with unusable audio" in report.summary()
    err = capsys.readouterr().err
    for key in ("empty", "garbage", "notes", "inverted", "past"):
        assert f"skipping utterance {key} (" in err


def test_nothing_usable_is_one_line_error(tmp_path, capsys):
    (tmp_path / "garbage.wav").write_bytes(b"RIFF" + bytes(100))
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"audio": {"path": "garbage.wav"}, "sentence": "x", "duration": 1.0,
                                "language": "en"}) + "\n")
    code, out, err = run_cli(["finetune", "--base_model", "base", "--train_data", str(path), "--test_data", str(path),
                              "--output_dir", str(tmp_path / "o")], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith(f"error: {path}: no utterance with usable audio (1 unusable, e.g. ")
    assert "garbage.wav" in last and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_finetune_trains_past_unusable_audio(tiny_model_dir, tmp_path, capsys):
    """Before: the run died mid-training with a DataLoader traceback on the first bad file."""
    path = _manifest_with_unusable_audio(tmp_path)
    main(["finetune", "--base_model", str(tiny_model_dir), "--train_data", str(path), "--test_data", str(path),
          "--output_dir", str(tmp_path / "models"), "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2",
          "--per_device_train_batch_size", "2", "--num_workers", "1", "--num_threads", "1"])
    out, err = capsys.readouterr()
    assert json.loads(out)["global_step"] == 2
    assert "train data" in err and "2 of 7 utterances kept" in err and "5 with unusable audio" in err


def _signal_at_step(step: int, signum: int):
    import os

    from transformers import TrainerCallback

    class SignalAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signum)

    return SignalAt()


@pytest.fixture
def sigterm_must_be_handled():
    """Without a handler SIGTERM would end pytest itself: fail the test instead."""
    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the default handler: finetune did not handle it")

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_saves_a_checkpoint_like_ctrl_c(trainable_tiny_dir, four_utterances, tmp_path, capsys,
                                                sigterm_must_be_handled):
    from whisper_ft.training.trainer import finetune

    settings = {"max_steps": 5, "save_steps": 100, "eval_steps": 100, "per_device_train_batch_size": 2}
    cut = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, train=settings),
                   callbacks=[_signal_at_step(2, signal.SIGTERM)])
    assert cut.interrupted and 2 <= cut.global_step < 5
    assert cut.last_checkpoint is not None and (cut.last_checkpoint / "adapter_model.safetensors").is_file()
    err = capsys.readouterr().err
    assert "SIGTERM: saving a checkpoint after this step" in err and "resume with --resume_from_checkpoint" in err
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the previous handler is back


@pytest.mark.slow
def test_interrupt_during_the_last_step_reports_a_completed_run(trainable_tiny_dir, four_utterances, tmp_path,
                                                                capsys):
    from whisper_ft.training.trainer import finetune

    settings = {"max_steps": 3, "save_steps": 3, "eval_steps": 3, "per_device_train_batch_size": 2}
    result = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, train=settings),
                      callbacks=[_signal_at_step(3, signal.SIGINT)])
    assert not result.interrupted and result.global_step == 3
    assert result.best_dir is not None and result.best_metrics["step"] == 3  # the final evaluation ran
    assert "the run completed (3 steps)" in capsys.readouterr().err


# ---- signals as schedulers send them: to the whole process group, DataLoader workers included ----


@pytest.mark.slow
@pytest.mark.parametrize("signum, notice", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "interrupt")],
                         ids=["sigterm-to-group", "ctrl-c-to-group"])
@pytest.mark.slow
def test_signal_to_the_process_group_saves_a_resumable_checkpoint(signum, notice, trainable_tiny_dir,
                                                                  four_utterances, tmp_path, capsys):
    """`kill -TERM -- -PGID` (Slurm, timeout, systemd) reaches the DataLoader workers too. Before: they
    died of it and the run ended with "DataLoader worker (pid N) is killed by signal: Terminated" and
    no checkpoint; on Ctrl-C each worker printed the interrupt notice again."""
    from tests.group_signal import TRAINING_STEP, signal_group_when

    # 40 utterances (the four, ten times), 2 a step: the workers of the first epoch are alive for
    # its 20 steps, so the signal meets them
    rows = [json.loads(line) for line in (four_utterances / "train.jsonl").read_text().splitlines()]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({**r, "id": f"{r['id']}_{k}",
                                         "audio": {"path": str(four_utterances / r["audio"]["path"])}}) + "\n"
                             for k in range(10) for r in rows))
    common = ["--base_model", str(trainable_tiny_dir), "--train_data", str(train),
              "--test_data", str(four_utterances / "test.jsonl"), "--output_dir", str(tmp_path / "models"),
              "--per_device_train_batch_size", "2", "--num_workers", "2", "--num_threads", "1",
              "--eval_steps", "1000", "--save_steps", "1000", "--logging_steps", "1", "--max_eval_samples", "1"]
    stopped = signal_group_when(["finetune", *common, "--max_steps", "500"], TRAINING_STEP, signum, cwd=tmp_path)
    err = stopped.stderr
    assert stopped.code == 130, err
    assert "DataLoader worker" not in err and "Traceback" not in err and "error:" not in err, err
    assert err.count(f"{notice}: saving a checkpoint after this step") == 1, err  # the main process only
    assert not stopped.stragglers
    result = json.loads(stopped.stdout)
    assert result["interrupted"] and 1 <= result["global_step"] < 500
    run_dir = tmp_path / "models" / trainable_tiny_dir.name
    step = result["global_step"]
    assert result["last_checkpoint"] == str(run_dir / f"checkpoint-{step}")
    assert [p.name for p in run_dir.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert (run_dir / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert f"resume with --resume_from_checkpoint {run_dir / f'checkpoint-{step}'}" in err

    main(["finetune", *common, "--max_steps", str(step + 1), "--resume_from_checkpoint"])  # = latest
    out, err = capsys.readouterr()
    resumed = json.loads(out)
    assert not resumed["interrupted"] and resumed["global_step"] == step + 1
    assert f"resuming from {run_dir / f'checkpoint-{step}'}" in err


# ---- a run folder is one run; a checkpoint is complete or not there ----


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_or_replaced(trainable_tiny_dir, four_utterances, tmp_path,
                                                                   monkeypatch, capsys):
    from whisper_ft.training import model as training_model
    from whisper_ft.training.trainer import finetune

    settings = {"max_steps": 2, "save_steps": 2, "eval_steps": 2, "per_device_train_batch_size": 2}
    first = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, train=settings))
    run = first.run_dir
    best = (run / "best" / "adapter_model.safetensors").read_bytes()
    loads = []
    monkeypatch.setattr(training_model, "load_base_for_training", lambda *a, **k: loads.append(a) or 1 / 0)
    with pytest.raises(WhisperFtError, match="already holds a run.*--resume_from_checkpoint.*--overwrite_output_dir"):
        finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, train=settings))
    assert loads == [] and (run / "best" / "adapter_model.safetensors").read_bytes() == best
    monkeypatch.undo()
    capsys.readouterr()
    once = {"max_steps": 1, "save_steps": 1, "eval_steps": 1, "overwrite_output_dir": True}
    second = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, train={**settings, **once}))
    assert second.run_dir == run and second.best_metrics["step"] == 1
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((run / "best" / "metrics.json").read_text())["step"] == 1
    assert "--overwrite_output_dir: removing the earlier run's checkpoint-2, best" in capsys.readouterr().err


@pytest.mark.slow
def test_without_output_dir_a_second_run_gets_a_fresh_folder(trainable_tiny_dir, four_utterances, tmp_path,
                                                              monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["finetune", "--base_model", str(trainable_tiny_dir), "--train_data", str(four_utterances / "train.jsonl"),
            "--test_data", str(four_utterances / "test.jsonl"), "--max_steps", "1", "--eval_steps", "1",
            "--save_steps", "1", "--per_device_train_batch_size", "4", "--num_workers", "0", "--num_threads", "1"]
    main(args)
    first = json.loads(capsys.readouterr().out)
    main(args)
    out = capsys.readouterr()
    second = json.loads(out.out)
    assert first["run_dir"] == str(Path("models") / "tiny-trainable")
    assert second["run_dir"] == str(Path("models") / "tiny-trainable-2")
    assert f"this run goes to {Path('models') / 'tiny-trainable-2'}" in out.err
    with pytest.raises(SystemExit) as exc:  # the folder named explicitly: refused, not renamed
        main([*args, "--output_dir", "models"])
    assert exc.value.code == 1 and "already holds a run" in capsys.readouterr().err
    main(["merge"])  # a bare merge takes the newest adapter: the second run's
    assert f"using the newest adapter, {Path('models') / 'tiny-trainable-2' / 'best'}" in capsys.readouterr().err


@pytest.mark.slow
def test_a_checkpoint_cut_short_by_a_full_disk_is_never_resumed(trainable_tiny_dir, four_utterances, tmp_path,
                                                                monkeypatch, capsys):
    import errno

    from whisper_ft.models import io as model_io
    from whisper_ft.training.trainer import finetune, resolve_checkpoint
    from whisper_ft.trainkit.run import CHECKPOINT_MARKER

    real = model_io.write_processor_files

    def disk_full_in_checkpoint_3(processor, out_dir):
        if Path(out_dir).name == "checkpoint-3":
            (Path(out_dir) / "tokenizer.json").write_text('{"trunc')
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(processor, out_dir)

    settings = {"max_steps": 4, "save_steps": 1, "eval_steps": 100, "per_device_train_batch_size": 2,
                "save_total_limit": None}
    monkeypatch.setattr(model_io, "write_processor_files", disk_full_in_checkpoint_3)
    with pytest.raises(OSError, match="No space left"):
        finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path, train=settings))
    monkeypatch.undo()
    run = tmp_path / "tiny-trainable"
    assert (run / "checkpoint-3" / "trainer_state.json").is_file()
    assert not (run / "checkpoint-3" / CHECKPOINT_MARKER).is_file()
    assert all((run / f"checkpoint-{n}" / CHECKPOINT_MARKER).is_file() for n in (1, 2))
    capsys.readouterr()
    assert resolve_checkpoint("latest", run) == run / "checkpoint-2"
    assert f"skipping {run / 'checkpoint-3'}" in capsys.readouterr().err
    with pytest.raises(WhisperFtError, match="incomplete"):
        resolve_checkpoint(str(run / "checkpoint-3"), run)
    resumed = finetune(make_config(trainable_tiny_dir, four_utterances, tmp_path,
                                   train={**settings, "resume_from_checkpoint": "latest"}))
    assert resumed.global_step == 4
    assert all((run / f"checkpoint-{n}" / CHECKPOINT_MARKER).is_file() for n in (3, 4))
    assert json.loads((run / "checkpoint-3" / "tokenizer.json").read_text())  # written again, whole


def test_best_is_replaced_only_by_a_complete_folder(tmp_path):
    import errno

    from whisper_ft.training.callbacks import BestModelCallback

    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    (best / "metrics.json").write_text('{"value": 0.5}')

    class DiskFull:
        generation_config = None

        def save_pretrained(self, folder, **kwargs):
            (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    callback = BestModelCallback(best, "wer", processor=None, run_config={})
    callback.best, callback.best_metrics = 0.1, {"step": 3}
    with pytest.raises(OSError):
        callback.save(DiskFull())
    assert [p.name for p in best.iterdir()] == ["metrics.json"] and (best / "metrics.json").read_text() == '{"value": 0.5}'
    assert [p.name for p in best.parent.iterdir()] == ["best"]  # no staging folder left

"""--prompt_ratio/--prompt_terms: training samples decoded after Whisper's previous-text prompt,
with the loss on the transcript only."""

from __future__ import annotations

import json

import pytest

from tests.test_finetune import TEXTS, make_config, trainable_tiny_dir, write_tone  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def speaker_folders(tmp_path_factory):
    """Two folders (speakers) of two utterances each, in manifest order a1, b1, a2, b2."""
    root = tmp_path_factory.mktemp("speakers")
    records = []
    for i, (folder, text) in enumerate(zip(["a", "b", "a", "b"], TEXTS)):
        (root / folder).mkdir(exist_ok=True)
        write_tone(root / folder / f"u{i}.wav", 6.0 + 0.5 * i, 300 + 400 * i)
        records.append({"audio": {"path": f"{folder}/u{i}.wav"}, "sentence": text, "duration": 6.0 + 0.5 * i,
                        "language": "en", "id": f"u{i}"})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _samples(tiny_model_dir, manifest):
    from transformers import WhisperProcessor

    from whisper_ft.training.data import build_samples
    from whisper_ft.training.labels import LabelBuilder
    from whisper_ft.trainkit.manifest import check_manifest

    processor = WhisperProcessor.from_pretrained(str(tiny_model_dir))
    builder = LabelBuilder.from_tokenizer(processor.tokenizer)
    pairs, report = check_manifest(manifest, name="train", language=None, min_duration=0.5, max_duration=30)
    return processor, builder, build_samples(pairs, report, processor.tokenizer, builder, timestamps=False)


def test_prompts_come_from_the_previous_utterance_of_the_same_folder_or_the_terms(tiny_model_dir, speaker_folders):
    from whisper_ft.training.data import PromptPlan, SpeechDataset, link_previous_texts
    from whisper_ft.training.labels import encode_text

    processor, builder, samples = _samples(tiny_model_dir, speaker_folders / "train.jsonl")
    assert link_previous_texts(samples) == 2
    assert [s.previous_ids for s in samples] == [None, None, samples[0].text_ids, samples[1].text_ids]

    def labels(prompts, epochs=4):
        ds = SpeechDataset(samples, builder, processor.feature_extractor, training=True, seed=1, prompts=prompts)
        return [ds[(i, e)]["labels"] for e in range(epochs) for i in range(4)]

    plain = labels(None)
    assert labels(PromptPlan(0.0)) == plain  # off: the data a run always saw, draw for draw
    every = labels(PromptPlan(1.0))
    # a sample with a previous utterance gets it as the prompt; the others stay plain
    for k, seq in enumerate(every):
        i = k % 4
        if i >= 2:
            assert seq == [builder.sot_prev, *samples[i - 2].text_ids, *plain[k]]
        else:
            assert seq == plain[k]
    terms = tuple(tuple(ids) for ids in encode_text(processor.tokenizer, ["kubernetes", "grafana", "etcd"]))
    with_terms = labels(PromptPlan(1.0, terms), epochs=8)
    assert all(seq[0] == builder.sot_prev for seq in with_terms)  # terms for those without a previous text
    term_tokens = {t for term in terms for t in term}
    assert any(set(seq[1:seq.index(builder.sot)]) <= term_tokens for seq in with_terms)
    half = labels(PromptPlan(0.5, terms), epochs=10)
    assert 10 <= sum(seq[0] == builder.sot_prev for seq in half) <= 30  # about half of 40
    # the prompt is cut to what Whisper reads and the decoder's 448 positions leave
    long = builder.prompted(list(range(1000)), plain[0])
    assert long[0] == builder.sot_prev and len(long) - 1 - len(plain[0]) == 223 and long[-len(plain[0]):] == plain[0]


def test_collator_masks_the_prompt_and_a_plain_batch_trains_as_before(tiny_model_dir, speaker_folders):
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisper_ft.training.data import PromptPlan, SpeechCollator, SpeechDataset, link_previous_texts

    processor, builder, samples = _samples(tiny_model_dir, speaker_folders / "train.jsonl")
    link_previous_texts(samples)
    model = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir)).eval()
    collate = SpeechCollator(builder.sot, sot_prev=builder.sot_prev)
    plain_items = [SpeechDataset(samples, builder, processor.feature_extractor, training=True)[(i, 0)] for i in range(4)]
    a = collate(plain_items)
    assert set(a) == {"input_features", "labels"}  # no prompt in the batch: as before
    b = collate._prompted([it["labels"] for it in plain_items])  # the collator's own inputs, no prompt
    with torch.no_grad():
        la = model(input_features=a["input_features"], labels=a["labels"]).loss
        lb = model(input_features=a["input_features"], **b).loss
    assert torch.equal(a["labels"], b["labels"]) and torch.allclose(la, lb)  # the model's own shift, exactly

    prompted_items = [SpeechDataset(samples, builder, processor.feature_extractor, training=True,
                                    prompts=PromptPlan(1.0))[(i, 0)] for i in range(4)]
    c = collate(prompted_items)
    assert set(c) == {"input_features", "decoder_input_ids", "labels"}
    for row, item in enumerate(prompted_items):
        seq = item["labels"]
        start = seq.index(builder.sot)
        assert c["decoder_input_ids"][row, : len(seq) - 1].tolist() == seq[:-1]
        targets = c["labels"][row].tolist()
        assert targets[:start] == [-100] * start  # the prompt and <|startoftranscript|> are context
        assert [t for t in targets if t != -100] == a["labels"][row][a["labels"][row] != -100].tolist()
    with torch.no_grad():
        out = model(**c)
    assert torch.isfinite(out.loss)


@pytest.mark.slow
def test_training_with_prompts_teaches_the_model_to_transcribe_after_one(trainable_tiny_dir, speaker_folders, tmp_path):  # noqa: F811
    """Two runs alike but for --prompt_ratio: both transcribe exactly without a prompt; after a
    previous-text prompt, the run trained with prompts has a much lower loss on the transcript (a
    model fine-tuned on bare transcripts learns to be thrown by one)."""
    import torch

    from whisper_ft.models.loading import load_whisper
    from whisper_ft.training.data import PromptPlan, SpeechCollator, SpeechDataset, link_previous_texts
    from whisper_ft.training.trainer import finetune
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate

    terms = tmp_path / "terms.txt"
    terms.write_text("kubernetes\t# 3 utterances\ngrafana\n")
    processor, builder, samples = _samples(trainable_tiny_dir, speaker_folders / "train.jsonl")
    link_previous_texts(samples)
    items = [SpeechDataset(samples, builder, processor.feature_extractor, training=True,
                           prompts=PromptPlan(1.0))[(i, 0)] for i in (2, 3)]  # prompted by u0, u1's texts
    batch = SpeechCollator(builder.sot, sot_prev=builder.sot_prev)(items)
    losses = {}
    for ratio in (0.0, 0.5):
        config = make_config(trainable_tiny_dir, speaker_folders, tmp_path / f"runs-{ratio}",
                             data={"prompt_ratio": ratio, **({"prompt_terms": str(terms)} if ratio else {})},
                             train={"max_steps": 60, "eval_steps": 30, "save_steps": 30, "save_total_limit": 1})
        result = finetune(config)
        saved = json.loads((result.run_dir / "finetune_config.json").read_text())
        assert result.global_step == 60 and saved["data"]["prompt_ratio"] == ratio
        report = evaluate(EvalSettings(model=str(result.best_dir), test_data=speaker_folders / "test.jsonl",
                                       backend="hf", cpu_threads=1, show_progress=False))
        assert report.score.error_rate == 0.0  # prompts in training cost nothing without one
        model = load_whisper(result.best_dir).model.eval()
        with torch.no_grad():
            losses[ratio] = float(model(**batch).loss)
    assert losses[0.5] < 0.5 * losses[0.0], losses

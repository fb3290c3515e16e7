"""Evaluation during training: real decoding of the test set, scored like `whisper-ft eval`.

The model generates from the prompt tokens only (``whisper_ft.decoding.hf.generate_texts``; no
reference token is fed in), and the transcripts are scored with ``whisper_ft.core.scoring.score``
(the shared normaliser). Utterances are scored per language and the edit counts pooled, so a
mixed zh/en test set gets CER on the Chinese and WER on the English parts added up correctly.
With several processes each decodes its share and the texts are gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_ft.trainkit.metrics import pooled_error_rates as pooled_error_rates


@dataclass
class DecodeScore:
    """Pooled error rates of one evaluation, plus a few examples to print."""

    cer: float
    wer: float
    n_utterances: int
    examples: list[tuple[str, str]]  # (reference, hypothesis)

    def metrics(self) -> dict[str, float]:
        return {"cer": self.cer, "wer": self.wer}


def transcribe_dataset(
    model, processor, dataset, indices: list[int], *, task: str, batch_size: int, num_beams: int,
    max_new_tokens: int | None, num_workers: int = 0,
) -> list[str]:
    """Decode ``dataset[indices]`` in batches; one hypothesis per index, in order."""
    import torch
    from torch.utils.data import DataLoader

    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.trainkit.workers import protect_workers

    def collate(items):
        feats = torch.from_numpy(np.stack([it["input_features"] for it in items]))
        return feats, [it["language"] for it in items]

    loader = protect_workers(DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                        shuffle=False, num_workers=num_workers, collate_fn=collate))
    from transformers.utils import logging as hf_logging

    hyps: list[str] = []
    was_training, verbosity = model.training, hf_logging.get_verbosity()
    model.eval()
    hf_logging.set_verbosity_error()  # generate()'s per-call notices would repeat at every evaluation
    try:
        for feats, langs in loader:
            hyps += generate_texts(model, processor, feats, language=langs, task=task, num_beams=num_beams,
                                   max_new_tokens=max_new_tokens)
    finally:
        model.train(was_training)
        hf_logging.set_verbosity(verbosity)
    return hyps


def evaluate_by_decoding(
    model, processor, dataset, *, task: str, batch_size: int, num_beams: int = 1,
    max_samples: int | None = None, num_workers: int = 0, accelerator=None,
) -> DecodeScore:
    """Decode the evaluation set (or its first ``max_samples``) and score it."""
    samples = dataset.samples
    n = len(samples) if max_samples is None else min(max_samples, len(samples))
    # Room for the longest reference and then some, so a looping hypothesis cannot take 448 steps.
    longest = max(len(s.text_ids) for s in samples[:n])
    max_new_tokens = min(440, int(1.5 * longest) + 16)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = list(range(rank, n, world))
    hyps = transcribe_dataset(model, processor, dataset, mine, task=task, batch_size=batch_size,
                              num_beams=num_beams, max_new_tokens=max_new_tokens, num_workers=num_workers)
    pairs = list(zip(mine, hyps))
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
    by_index = dict(pairs)
    hyps_all = [by_index[i] for i in range(n)]
    refs = [samples[i].utterance.sentence for i in range(n)]
    langs = [samples[i].language for i in range(n)]
    cer, wer = pooled_error_rates(refs, hyps_all, langs)
    return DecodeScore(cer=cer, wer=wer, n_utterances=n, examples=list(zip(refs, hyps_all))[:3])

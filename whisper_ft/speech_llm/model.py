"""The speech-LLM module: frozen Whisper encoder -> trainable projector -> frozen causal LM (+ LoRA).

The LLM reads ``prefix + audio + suffix + transcript + end`` as input embeddings, where prefix and
suffix are the chat template around the user turn (see :mod:`whisper_ft.speech_llm.llm`) and the
audio positions are the projector's outputs. The loss is cross-entropy on the transcript and end
token only, and the LM head (the largest matrix of a small LLM: vocabulary x width) is applied only
at those positions, not at every position of the sequence.

Generation feeds ``prefix + audio + suffix`` (left-padded) to the LLM's own ``generate`` as
``inputs_embeds``: greedy or beam search, a no-repeat-n-gram guard and a per-clip length cap.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from whisper_ft.speech_llm.encoder import encode
from whisper_ft.speech_llm.llm import PromptTemplate
from whisper_ft.speech_llm.projector import FrameConcatProjector

IGNORE_INDEX = -100


def unwrap_llm(llm):
    """The transformers causal LM inside a peft wrapper (LoRA layers are injected in place)."""
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


class SpeechLLM(nn.Module):
    """See the module docstring. Only the projector (and LoRA weights, if any) have gradients."""

    def __init__(self, encoder, projector: FrameConcatProjector, llm, prompt: PromptTemplate, pad_id: int):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.llm = llm
        self.prompt = prompt
        self.pad_id = int(pad_id)
        self.encoder.requires_grad_(False)

    # transformers' Trainer and accelerate look these up on the model
    @property
    def config(self):
        return unwrap_llm(self.llm).config

    @property
    def lm(self):
        return unwrap_llm(self.llm)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: never dropout in the encoder
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a run saves: projector + LoRA (names as in ``state_dict()``)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    # -- inputs --------------------------------------------------------------------------------

    def audio_embeddings(self, features=None, feature_lengths=None, encoder_out=None, encoder_lengths=None):
        """Projected audio ``[B, N, d_llm]`` and each clip's number of positions ``[B]``.

        Either mel ``features`` (run through the frozen encoder) or cached ``encoder_out``.
        """
        if encoder_out is None:
            with torch.no_grad():
                encoder_out, encoder_lengths = encode(self.encoder, features, feature_lengths)
        weight = self.projector.linear1.weight
        audio = self.projector(encoder_out.to(device=weight.device, dtype=weight.dtype))
        return audio, FrameConcatProjector.output_lengths(encoder_lengths.to(weight.device), self.projector.k)

    def _embed_ids(self, ids, device):
        emb = self.lm.get_input_embeddings()
        return emb(torch.as_tensor(list(ids), dtype=torch.long, device=device))

    def build_inputs(self, audio, audio_lengths, targets: list[list[int]] | None, *, left_pad: bool):
        """``inputs_embeds [B, L, d]``, ``attention_mask [B, L]`` and ``labels [B, L]`` (-100 but
        at the transcript + end positions; ``None`` without targets)."""
        device = audio.device
        emb_dtype = self.lm.get_input_embeddings().weight.dtype
        prefix = self._embed_ids(self.prompt.prefix_ids, device)
        suffix = self._embed_ids(self.prompt.suffix_ids, device)
        rows, label_rows = [], []
        for i in range(audio.shape[0]):
            parts = [prefix, audio[i, : int(audio_lengths[i])].to(emb_dtype), suffix]
            n_context = sum(p.shape[0] for p in parts)
            labels = [IGNORE_INDEX] * n_context
            if targets is not None:
                target = [*targets[i], self.prompt.end_id]
                parts.append(self._embed_ids(target, device))
                labels += target
            rows.append(torch.cat(parts))
            label_rows.append(labels)
        length = max(r.shape[0] for r in rows)
        embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long, device=device)
        for i, (row, lab) in enumerate(zip(rows, label_rows)):
            span = slice(length - row.shape[0], length) if left_pad else slice(0, row.shape[0])
            embeds[i, span] = row
            mask[i, span] = 1
            labels[i, span] = torch.tensor(lab, dtype=torch.long, device=device)
        return embeds, mask, (labels if targets is not None else None)

    # -- training ------------------------------------------------------------------------------

    def forward(self, labels, features=None, feature_lengths=None, encoder_out=None, encoder_lengths=None, **_):
        """Mean cross-entropy over the transcript + end tokens of the batch (``{"loss": ...}``).

        ``labels``: ``[B, T]`` transcript ids padded with -100 (the end token is added here).
        """
        audio, audio_lengths = self.audio_embeddings(features, feature_lengths, encoder_out, encoder_lengths)
        targets = [[int(t) for t in row if t != IGNORE_INDEX] for row in labels.tolist()]
        embeds, mask, full_labels = self.build_inputs(audio, audio_lengths, targets, left_pad=False)
        lm = self.lm
        hidden = lm.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)[0]
        shifted = full_labels[:, 1:]
        keep = shifted != IGNORE_INDEX
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep])  # the LM head at label positions only
        loss = nn.functional.cross_entropy(logits.float(), shifted[keep])
        return {"loss": loss}

    # -- decoding ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_ids(self, audio, audio_lengths, max_new_tokens: list[int], *, num_beams: int = 1,
                     no_repeat_ngram_size: int = 0, repetition_penalty: float = 1.0) -> list[list[int]]:
        """New token ids per clip (up to its end token and its own length cap)."""
        from transformers import GenerationConfig

        embeds, mask, _ = self.build_inputs(audio, audio_lengths, None, left_pad=True)
        stops = list(self.prompt.stop_ids)
        config = GenerationConfig(
            max_new_tokens=max(max_new_tokens), num_beams=num_beams, do_sample=False,
            no_repeat_ngram_size=no_repeat_ngram_size or 0, repetition_penalty=repetition_penalty,
            eos_token_id=stops, pad_token_id=self.pad_id, bos_token_id=None,
        )
        with warnings.catch_warnings():  # the n-gram guard applies to the generated tokens, as intended
            warnings.filterwarnings("ignore", message=".*no_repeat_ngram_size.*inputs_embeds.*")
            out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)
        results = []
        for row, cap in zip(out.tolist(), max_new_tokens):
            ids = []
            for tid in row[:cap]:
                if tid in stops:
                    break
                ids.append(tid)
            results.append(ids)
        return results

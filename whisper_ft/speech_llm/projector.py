"""SLAM-ASR's projector: stack K consecutive encoder frames, then Linear -> ReLU -> Linear.

Whisper's encoder gives 50 frames per second; with K = 5 the LLM sees 10 positions per second of
audio. Frames left over at the end (fewer than K) are dropped, as in SLAM-LLM.
"""

from __future__ import annotations

import torch
from torch import nn


class FrameConcatProjector(nn.Module):
    """``[B, T, d_enc]`` encoder frames -> ``[B, T // k, d_llm]`` LLM input embeddings."""

    def __init__(self, k: int, encoder_dim: int, llm_dim: int, hidden: int = 2048):
        super().__init__()
        self.k = k
        self.linear1 = nn.Linear(k * encoder_dim, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, llm_dim)

    @staticmethod
    def output_lengths(encoder_lengths: torch.Tensor, k: int) -> torch.Tensor:
        return encoder_lengths // k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        t = t - t % self.k
        x = x[:, :t].reshape(b, t // self.k, d * self.k)
        return self.linear2(self.relu(self.linear1(x)))

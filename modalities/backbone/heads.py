"""Task heads that belong with the backbone's layers (tasks/ composes them, never defines them)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .linear import Linear, linear
from .mlp import activation_fn


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense + activation + LayerNorm, then a decoder tied to the embeddings."""

    def __init__(self, hidden_size: int, embedding: nn.Embedding, activation: str = "gelu", eps: float = 1e-12):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size)
        self.act = activation_fn("gelu" if activation in ("geglu", "swiglu") else activation)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.embedding = embedding  # tied: the decoder weight is the input embedding table
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, h: Tensor) -> Tensor:
        # h: (..., D) -> logits (..., V)
        h = self.norm(self.act(self.dense(h)))
        return linear(h, self.embedding.weight, self.bias)

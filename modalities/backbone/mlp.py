"""Feed-forward blocks: a plain two-layer MLP or a gated linear unit (GeGLU, SwiGLU)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .config import BackboneConfig
from .linear import Linear

_ACT = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "geglu": lambda x: F.gelu(x),
    "swiglu": F.silu,
}


def activation_fn(name: str):
    try:
        return _ACT[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of: {sorted(_ACT)}") from None


class MLP(nn.Module):
    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.gated = config.activation in ("geglu", "swiglu")
        width = config.intermediate_size * (2 if self.gated else 1)  # gated: [gate; up]
        self.fc1 = Linear(config.hidden_size, width, bias=config.bias)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, bias=config.bias)
        self.act = activation_fn(config.activation)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)  # (..., F) or (..., 2F)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.fc2(h)

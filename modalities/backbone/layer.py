"""One transformer block, post-LN (BERT) or pre-LN."""

from __future__ import annotations

from torch import Tensor, nn

from .attention import AttentionInputs, SelfAttention
from .config import BackboneConfig
from .mlp import MLP


class EncoderLayer(nn.Module):
    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        # x: (B, T, D) padded or (N, D) unpadded; every op but the attention core is per token
        if self.pre_norm:
            x = x + self.dropout(self.attn(self.attn_norm(x), inputs))
            return x + self.dropout(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + self.dropout(self.attn(x, inputs)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))

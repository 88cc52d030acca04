"""One transformer block, post-LN (BERT) or pre-LN."""

from __future__ import annotations

from torch import Tensor, nn

from .attention import AttentionInputs, SelfAttention
from .config import BackboneConfig
from .dropout import FastDropout
from .mlp import MLP


def layer_norm(config: BackboneConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)


class EncoderLayer(nn.Module):
    def __init__(self, config: BackboneConfig, index: int = 0):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.local = config.is_local(index)  # attends within config.local_attention // 2 positions only
        self.attn = SelfAttention(config)
        skip = self.pre_norm and index == 0 and not config.first_layer_attn_norm
        self.attn_norm = nn.Identity() if skip else layer_norm(config)
        self.mlp = MLP(config)
        self.mlp_norm = layer_norm(config)
        self.dropout = FastDropout(config.hidden_dropout)

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        # x: (B, T, D) padded or (N, D) unpadded; every op but the attention core is per token
        if self.pre_norm:
            x = x + self.dropout(self.attn(self.attn_norm(x), inputs))
            return x + self.dropout(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + self.dropout(self.attn(x, inputs)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))

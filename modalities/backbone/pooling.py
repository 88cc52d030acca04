"""Poolers: token states (B, T, D) + mask (B, T) -> one vector (B, D), chosen by name.

mean, max (element-wise over the real tokens: one anomalous token can decide), weighted_mean
(SGPT's position weights: later tokens, which saw more context in a decoder, weigh more), eos
(the last real token), cls / bos (the first real token), latent_attention (NV-Embed /
LLM2VEC4CXR: the tokens attend to a trainable latent array, an MLP follows, then the mean), and
cxr-bert-projection (CXR-BERT's projection head on the [CLS] state). Every pooler reads the mask,
so left padding (LLM2Vec's tokenizer) and right padding (Tessera's collate) pool alike.
Shared by every modality: the CXR text towers, the code classifier, code embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import Registry

POOLERS: Registry[type[nn.Module]] = Registry("pooling")


def _check(h: Tensor, mask: Tensor) -> Tensor:
    if h.dim() != 3 or mask.shape != h.shape[:2]:
        raise ValueError(f"pooling expects states (B, T, D) and mask (B, T), got {tuple(h.shape)} and {tuple(mask.shape)}")
    m = mask.bool()
    if not m.any(dim=1).all():
        raise ValueError("a row of the attention mask has no real token; drop empty texts before encoding")
    return m


@POOLERS.register("mean")
class MeanPool(nn.Module):
    def __init__(self, hidden_size: int = 0, **_):
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = _check(h, mask).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * m).sum(1) / m.sum(1)


@POOLERS.register("max")
class MaxPool(nn.Module):
    def __init__(self, hidden_size: int = 0, **_):
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = _check(h, mask).unsqueeze(-1)  # padding can never win
        return h.masked_fill(~m, float("-inf")).amax(1)


@POOLERS.register("weighted_mean")
class WeightedMeanPool(nn.Module):
    def __init__(self, hidden_size: int = 0, **_):
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = _check(h, mask)
        w = (m.cumsum(1) * m).to(h.dtype).unsqueeze(-1)  # (B, T, 1): 1, 2, ..., n on real tokens
        return (h * w).sum(1) / w.sum(1)


def _first_real(m: Tensor) -> Tensor:
    """(B, T) bool -> (B,) index of each row's first real token (0 with right padding)."""
    return m.int().argmax(1)


def _last_real(m: Tensor) -> Tensor:
    """(B, T) bool -> (B,) index of each row's last real token (T - 1 with left padding)."""
    T = m.shape[1]
    return T - 1 - m.flip(1).int().argmax(1)


@POOLERS.register("eos")
class EosPool(nn.Module):
    """The state of the last real token, whichever side the padding is on (LLM2Vec's eos_token)."""

    def __init__(self, hidden_size: int = 0, **_):
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        last = _last_real(_check(h, mask))  # (B,)
        return h[torch.arange(h.shape[0], device=h.device), last]


@POOLERS.register("bos")  # LLM2Vec's name for it
@POOLERS.register("cls")
class ClsPool(nn.Module):
    """The state of the first real token ([CLS] / BOS), whichever side the padding is on."""

    def __init__(self, hidden_size: int = 0, **_):
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        first = _first_real(_check(h, mask))  # (B,)
        return h[torch.arange(h.shape[0], device=h.device), first]


@POOLERS.register("latent_attention")
class LatentAttentionPool(nn.Module):
    """NV-Embed's latent attention: O = softmax(Q K^T) V with Q the token states and K = V a
    trainable latent array (num_latents x D), then an MLP, then the masked mean."""

    def __init__(self, hidden_size: int, num_latents: int = 512, num_heads: int = 8, **_):
        super().__init__()
        if hidden_size % num_heads:
            num_heads = 1  # tiny test models: fall back to one head rather than fail
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_size) * hidden_size**-0.5)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = _check(h, mask)
        kv = self.latents.to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)  # (B, L, D)
        o, _ = self.attn(h, kv, kv, need_weights=False)  # (B, T, D)
        o = self.mlp(o)
        w = m.unsqueeze(-1).to(h.dtype)
        return (o * w).sum(1) / w.sum(1)


@POOLERS.register("cxr-bert-projection")
class CXRBertProjectionPool(nn.Module):
    """CXR-BERT's projection head (BiomedVLP-CXR-BERT-specialized, ``BertProjectionHead`` in
    hi-ml-multimodal's ``health_multimodal/text/model/modelling_cxrbert.py``) on the [CLS] state:
    dense_to_hidden (D -> P) -> erf GELU -> LayerNorm(P, eps 1e-12) -> dense_to_output (P -> P).
    Returns the raw projection (``cls_projected_embedding``); upstream's
    ``get_projected_text_embeddings`` is its L2-normalised form. Submodule names are upstream's,
    so ``cls_projection_head.*`` maps one to one."""

    def __init__(self, hidden_size: int, projection_size: int = 128, **_):
        super().__init__()
        self.dense_to_hidden = nn.Linear(hidden_size, projection_size)
        self.LayerNorm = nn.LayerNorm(projection_size, eps=1e-12)
        self.dense_to_output = nn.Linear(projection_size, projection_size)
        self.output_dim = projection_size

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = _check(h, mask)
        cls = h[torch.arange(h.shape[0], device=h.device), _first_real(m)]  # (B, D)
        x = nn.functional.gelu(self.dense_to_hidden(cls))  # (B, P)
        return self.dense_to_output(self.LayerNorm(x))  # (B, P)


def create_pooler(name: str, hidden_size: int, **kwargs) -> nn.Module:
    return POOLERS.get(name)(hidden_size=hidden_size, **kwargs)

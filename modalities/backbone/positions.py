"""Relative position schemes applied inside attention: ALiBi biases and rotary embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def alibi_slopes(num_heads: int) -> Tensor:
    """(H,) geometric slopes of Press et al.; non-powers of two interleave the next power's."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(positions: Tensor, slopes: Tensor) -> Tensor:
    """Symmetric ALiBi (MosaicBERT): -slope_h * |i - j|.

    positions: (..., T) long -> bias (..., H, T, T) float32
    """
    rel = (positions[..., None, :] - positions[..., :, None]).abs().float()  # (..., T, T)
    return -slopes.to(rel.device).view(-1, 1, 1) * rel.unsqueeze(-3)  # (..., H, T, T)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions (...,) -> cos, sin (..., 1, head_dim) to broadcast over heads."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )  # (hd/2,)
    angles = positions.float()[..., None] * inv_freq  # (..., hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., hd), "rotate half" layout as Llama/NeoX
    return angles.cos().unsqueeze(-2), angles.sin().unsqueeze(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (..., H, hd) rotated by the per-token angles; computed in x's dtype."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)

"""Remove padding once at the backbone's entry and restore it once at the exit.

Layouts:
    padded:   x (B, T, D) with mask (B, T), True/1 at real tokens
    unpadded: x (N, D) with cu_seqlens (B + 1,) int32, N = mask.sum()
Real tokens keep their order; sequence b owns rows cu_seqlens[b]:cu_seqlens[b + 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Unpadded:
    indices: Tensor  # (N,) positions of the real tokens in the flattened (B * T) batch
    cu_seqlens: Tensor  # (B + 1,) int32 cumulative lengths
    seqlens: list[int]  # (B,) python ints, for loops that slice per sequence
    max_seqlen: int  # longest real sequence
    batch: int  # B
    length: int  # T of the padded layout


def unpad(x: Tensor, mask: Tensor) -> tuple[Tensor, Unpadded]:
    """(B, T, D), (B, T) -> (N, D) and what is needed to pad back."""
    B, T = mask.shape
    mask = mask.bool()
    seqlens_t = mask.sum(dim=1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()  # (N,)
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens_t, 0, dtype=torch.int32), (1, 0))
    seqlens = seqlens_t.tolist()
    info = Unpadded(indices, cu_seqlens, seqlens, max(seqlens), B, T)
    return x.flatten(0, 1)[indices], info  # (N, D)


def pad(x: Tensor, info: Unpadded) -> Tensor:
    """(N, D) -> (B, T, D) with zeros at padded positions."""
    out = x.new_zeros(info.batch * info.length, *x.shape[1:])
    out = out.index_copy(0, info.indices, x)  # out-of-place: autograd flows to x
    return out.view(info.batch, info.length, *x.shape[1:])


def token_positions(mask: Tensor) -> Tensor:
    """(B, T) mask -> (B, T) long: the index of each token among its row's real tokens.

    Padded and unpadded layouts then give every real token the same position, whatever
    the padding side, so ALiBi/RoPE agree across backends.
    """
    return (mask.long().cumsum(dim=1) - 1).clamp_(min=0)

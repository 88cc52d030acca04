"""Remove padding once at the backbone's entry and restore it once at the exit.

Layouts:
    padded:   x (B, T, D) with mask (B, T), True/1 at real tokens
    unpadded: x (N, D) with cu_seqlens (B + 1,) int32, N = mask.sum()
Real tokens keep their order; sequence b owns rows cu_seqlens[b]:cu_seqlens[b + 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Bucket:
    """Sequences of similar length, laid out padded for one batched attention call."""

    gather: Tensor  # (b, L) long: the packed row of each slot (0 at padding slots)
    valid: Tensor  # (b, L) bool: real slots
    scatter: Tensor  # (n,) long: the packed rows of the real slots, in valid.flatten() order
    full: bool  # every slot is real (no key mask needed)


@dataclass
class Unpadded:
    indices: Tensor  # (N,) positions of the real tokens in the flattened (B * T) batch
    cu_seqlens: Tensor  # (B + 1,) int32 cumulative lengths
    seqlens: list[int]  # (B,) python ints, for loops that slice per sequence
    max_seqlen: int  # longest real sequence
    batch: int  # B
    length: int  # T of the padded layout
    _buckets: list[Bucket] | None = None
    cache: dict = field(default_factory=dict)  # per-forward attention structures shared by the layers

    @property
    def dense(self) -> bool:
        """Every slot of the padded batch is real: the packed rows are the padded ones, in order."""
        return self.indices.numel() == self.batch * self.length

    def buckets(self, waste: float = 0.15) -> list[Bucket]:
        """The sequences grouped by length (longest first) so that padding each group to its
        longest member adds at most ``waste`` of its real tokens: a few batched attention calls
        per layer instead of one per sequence. Built once per forward, shared by every layer."""
        if self._buckets is None:
            self._buckets = length_buckets(self.seqlens, self.cu_seqlens.tolist(), waste, self.indices.device)
        return self._buckets


    def documents(self) -> tuple[Tensor, Tensor]:
        """(N,) long each: the sequence every packed token belongs to and its position inside it."""
        if "documents" not in self.cache:
            lengths = torch.diff(self.cu_seqlens).long()  # (B,)
            doc = torch.repeat_interleave(torch.arange(self.batch, device=lengths.device), lengths)  # (N,)
            pos = torch.arange(doc.numel(), device=doc.device) - self.cu_seqlens.long()[doc]  # (N,)
            self.cache["documents"] = (doc, pos)
        return self.cache["documents"]


def length_buckets(seqlens: list[int], starts: list[int], waste: float, device) -> list[Bucket]:
    order = sorted(range(len(seqlens)), key=lambda b: -seqlens[b])
    groups: list[list[int]] = []
    for b in order:  # greedy: join the current group while its padding stays within the budget
        if groups:
            g = groups[-1]
            L = seqlens[g[0]]
            real = sum(seqlens[i] for i in g) + seqlens[b]
            if (len(g) + 1) * L <= (1.0 + waste) * real:
                g.append(b)
                continue
        groups.append([b])
    out = []
    for g in groups:
        L = seqlens[g[0]]
        lengths = torch.tensor([seqlens[b] for b in g])
        offsets = torch.tensor([starts[b] for b in g])
        slots = torch.arange(L)
        valid = slots[None, :] < lengths[:, None]  # (b, L)
        gather = torch.where(valid, offsets[:, None] + slots[None, :], 0)  # (b, L)
        out.append(Bucket(gather.to(device), valid.to(device), gather[valid].to(device), bool(valid.all())))
    return out


def unpad(x: Tensor, mask: Tensor) -> tuple[Tensor, Unpadded]:
    """(B, T, D), (B, T) -> (N, D) and what is needed to pad back."""
    B, T = mask.shape
    mask = mask.bool()
    seqlens_t = mask.sum(dim=1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()  # (N,)
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens_t, 0, dtype=torch.int32), (1, 0))
    seqlens = seqlens_t.tolist()
    info = Unpadded(indices, cu_seqlens, seqlens, max(seqlens), B, T)
    if info.dense:  # nothing to remove: a view, no gather (and no scatter in backward)
        return x.flatten(0, 1), info  # (B * T, D)
    return x.flatten(0, 1)[indices], info  # (N, D)


def pad(x: Tensor, info: Unpadded) -> Tensor:
    """(N, D) -> (B, T, D) with zeros at padded positions."""
    if info.dense:
        return x.view(info.batch, info.length, *x.shape[1:])
    out = x.new_zeros(info.batch * info.length, *x.shape[1:])
    out = out.index_copy(0, info.indices, x)  # out-of-place: autograd flows to x
    return out.view(info.batch, info.length, *x.shape[1:])


def token_positions(mask: Tensor) -> Tensor:
    """(B, T) mask -> (B, T) long: the index of each token among its row's real tokens.

    Padded and unpadded layouts then give every real token the same position, whatever
    the padding side, so ALiBi/RoPE agree across backends.
    """
    return (mask.long().cumsum(dim=1) - 1).clamp_(min=0)

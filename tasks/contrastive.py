"""Contrastive losses that see the global batch under data parallelism.

- ``InfoNCE``: one-directional InfoNCE (SimCSE, LLM2Vec's supervised step) with open_clip's
  distributed options: the keys (and their groups) of every rank are gathered, with gradient
  (``torch.distributed.nn.functional.all_gather``: the backward sends each rank the gradient of
  its own rows) or without it (other ranks' rows are constants, the local rows keep theirs);
  ``local_loss`` scores only this rank's queries against all keys (open_clip's ``local_loss``),
  otherwise every rank scores the whole global batch. Ranks may hold different batch sizes.
- ``clip_loss(kind, rank, world_size)``: open_clip's ``ClipLoss`` (local_loss, gather_with_grad)
  or ``SigLipLoss`` (neighbour exchange), configured for the process group.

Under DDP the gradients are averaged over ranks, so with ``gather_with_grad`` and ``local_loss``
the update equals the one from the single-process loss on the concatenated batch
(``tests/test_cxr_distributed.py`` checks the loss and the gradients on a 2-process gloo group).
With ``world_size == 1`` nothing is gathered.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.nn.functional import (
    all_gather as all_gather_with_grad,  # backward: each rank's rows' gradient
)


def gather_rows(x: Tensor, rank: int, world_size: int, with_grad: bool) -> tuple[Tensor, int]:
    """Every rank's ``x`` (n_r, ...) concatenated in rank order, and this rank's row offset.
    Rows are padded to the largest n_r for the collective and the padding dropped after."""
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = max(sizes) - x.shape[0]
    xp = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    if with_grad:
        parts = list(all_gather_with_grad(xp))
    else:
        parts = [torch.zeros_like(xp) for _ in range(world_size)]
        dist.all_gather(parts, xp.detach())
        parts[rank] = xp  # the local rows keep their gradient
    out = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])  # (sum n_r, ...)
    return out, sum(sizes[:rank])


class InfoNCE(nn.Module):
    """Row i of ``queries`` should match row i of ``keys`` among all keys; keys in the same
    ``group`` as the positive (another report with the same impression) are not negatives.

    Args:
        temperature: logits are cosine / temperature (SimCSE / LLM2Vec: 0.05).
        rank, world_size: this process in the data-parallel group (1: nothing is gathered).
        local_loss: score this rank's queries only (the DDP-average is then the global loss).
        gather_with_grad: gradients flow into other ranks' rows (exact global gradient).
    """

    def __init__(self, temperature: float = 0.05, rank: int = 0, world_size: int = 1, local_loss: bool = True,
                 gather_with_grad: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.rank, self.world_size = temperature, rank, world_size
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def forward(self, queries: Tensor, keys: Tensor, group: Tensor | None = None) -> Tensor:
        if queries.shape[0] != keys.shape[0]:
            raise ValueError(f"queries and keys must pair up row by row, got {queries.shape[0]} and {keys.shape[0]}")
        q, k = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
        gq = gk = group
        offset = 0
        if self.world_size > 1:
            k, offset = gather_rows(k, self.rank, self.world_size, self.gather_with_grad)
            if group is not None:
                gk, _ = gather_rows(group, self.rank, self.world_size, False)
            if not self.local_loss:
                q, _ = gather_rows(q, self.rank, self.world_size, self.gather_with_grad)
                gq, offset = gk, 0
        labels = offset + torch.arange(q.shape[0], device=q.device)  # (n,) the positive's column
        logits = q @ k.T / self.temperature  # (n, N)
        if group is not None:
            same = gq[:, None] == gk[None, :]
            same[torch.arange(len(labels), device=q.device), labels] = False
            logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits.float(), labels)


def equal_rows(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Cut every rank's rows to the smallest row count in the process group (a collective: every
    rank calls it). open_clip's gathered losses need the same batch size on every rank, which a
    batch that lost records to decoding errors breaks; the surplus rows sit that step out."""
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    dist.all_reduce(n, op=dist.ReduceOp.MIN)
    return tuple(t[: int(n)] for t in tensors)


def clip_loss(kind: str = "clip", rank: int = 0, world_size: int = 1) -> nn.Module:
    """open_clip's image-text loss for a data-parallel group: ``ClipLoss`` with ``local_loss`` and
    ``gather_with_grad`` (global negatives, exact gradient), or ``SigLipLoss`` (texts passed
    around the ranks). Every rank must hold the same batch size (``equal_rows``)."""
    from open_clip.loss import ClipLoss, SigLipLoss

    if kind == "clip":
        return ClipLoss(local_loss=world_size > 1, gather_with_grad=world_size > 1, rank=rank, world_size=world_size)
    if kind == "siglip":
        return SigLipLoss(rank=rank, world_size=world_size)
    raise ValueError(f"loss {kind!r} is not 'clip' or 'siglip'")

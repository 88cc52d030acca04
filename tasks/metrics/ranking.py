"""Leave-one-out ranking metrics from the rank of the held-out item (0 = ranked first)."""

from __future__ import annotations

import torch
from torch import Tensor


def rank_of_target(scores: Tensor, target: Tensor) -> Tensor:
    """scores (B, C), target (B,) column of the true item -> rank (B,) long.

    Rank = number of candidates scored strictly higher, plus half the ties (ties broken
    by expectation, so a constant model gets no free hits).
    """
    t = scores.gather(1, target[:, None])  # (B, 1)
    higher = (scores > t).sum(1).float()
    ties = (scores == t).sum(1).float() - 1  # the target itself is not a tie
    return (higher + ties / 2).floor().long()


def ranking_metrics(ranks: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1 / log2(rank + 2) inside the top k) and MRR."""
    r = ranks.double()
    out = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2), torch.zeros_like(r)).mean().item()
    out["mrr"] = (1.0 / (r + 1)).mean().item()
    return out

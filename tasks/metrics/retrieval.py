"""Cross-modal / text-to-text retrieval: Recall@K with a deduplicated gallery."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .ranking import rank_of_target


def dedup_gallery(targets: list[str], key=lambda t: t) -> tuple[list[int], Tensor]:
    """Texts whose ``key`` is equal are one gallery entry (many reports share an impression such
    as "No acute cardiopulmonary abnormality"): returns the gallery's representative indices into
    ``targets`` and, for every query, its gallery index (B,)."""
    first: dict[str, int] = {}
    reps: list[int] = []
    index = []
    for i, t in enumerate(targets):
        k = key(t)
        if k not in first:
            first[k] = len(reps)
            reps.append(i)
        index.append(first[k])
    return reps, torch.tensor(index)


def retrieval_recall(queries: Tensor, gallery: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """queries (Q, E), gallery (G, E), target (Q,) gallery index -> recall@k, MRR, median rank.

    Cosine similarity; ties count half (``rank_of_target``), so a constant model scores chance.
    """
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T  # (Q, G)
    ranks = rank_of_target(sims, target)
    out = {f"recall@{k}": (ranks < k).double().mean().item() for k in ks}
    out["mrr"] = (1.0 / (ranks.double() + 1)).mean().item()
    out["median_rank"] = float(ranks.double().median().item() + 1)
    out["queries"], out["gallery"] = int(queries.shape[0]), int(gallery.shape[0])
    return out


def retrieval_recall_any(queries: Tensor, gallery: Tensor, relevant: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Several relevant gallery items per query (relevant (Q, G) bool): the rank is that of the
    best-scored relevant item among the irrelevant ones (e.g. report -> image where many reports
    share one text)."""
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T  # (Q, G)
    if not relevant.any(1).all():
        raise ValueError("every query needs at least one relevant gallery item")
    best = sims.masked_fill(~relevant, float("-inf")).max(1).values  # (Q,)
    ranks = ((sims > best[:, None]) & ~relevant).sum(1)
    out = {f"recall@{k}": (ranks < k).double().mean().item() for k in ks}
    out["mrr"] = (1.0 / (ranks.double() + 1)).mean().item()
    out["queries"], out["gallery"] = int(queries.shape[0]), int(gallery.shape[0])
    return out

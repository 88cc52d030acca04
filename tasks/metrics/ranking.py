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


def sample_negatives(popularity: Tensor, exclude: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` item columns drawn by ``popularity`` (num_items,) without replacement, never one of
    the columns in ``exclude`` (the user's history and target). Every other item stays drawable
    (a tiny floor weight), so an unpopular catalogue does not shrink the candidate set."""
    w = popularity.float().clone() + 1e-9  # (num_items,)
    w[exclude] = 0
    drawable = int((w > 0).sum())
    if drawable < n:
        raise ValueError(f"only {drawable} items are left to draw {n} negatives from; lower the number of negatives")
    return torch.multinomial(w, n, replacement=False, generator=generator)


def fewest_unseen(sequences: list[list[int]], num_items: int) -> int:
    """The fewest items any user has not interacted with (the negatives a sampled protocol can draw)."""
    return num_items - max((len(set(s)) for s in sequences), default=0)


def check_negatives(sequences: list[list[int]], num_items: int, negatives: int, option: str) -> None:
    """A clear error, before any evaluation, when some user has fewer unseen items than ``negatives``."""
    fewest = fewest_unseen(sequences, num_items)
    if negatives > fewest:
        raise ValueError(f"{option} is {negatives} but a user has only {fewest} items they have not seen "
                         f"({num_items} items in all); set {option} to at most {fewest}")


def leave_one_out_ranks(scores: Tensor, popularity: Tensor, histories: list[Tensor], targets: Tensor,
                        users: Tensor, negatives: int, seed: int) -> dict[str, Tensor]:
    """Ranks of the held-out items for the model and MostPopular under both protocols.

    scores (B, num_items), column j = item j + 1; popularity (num_items,) training counts;
    histories: B tensors of remapped ids (never the target); targets (B,) remapped ids; users (B,)
    seed the negatives per user, so every evaluation uses the same candidates.
    Returns {"model/full", "model/pop<N>", "mostpop/full", "mostpop/pop<N>"} -> ranks (B,).
    """
    device = scores.device
    target = targets.to(device) - 1  # (B,) column of the true item
    seen = torch.zeros_like(scores, dtype=torch.bool)  # (B, num_items): the history, never the target
    for r, hist in enumerate(histories):
        seen[r, hist.to(device) - 1] = True
    seen[torch.arange(len(target)), target] = False
    cols = []
    for hist, t, user in zip(histories, targets, users, strict=True):
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(user))
        exclude = torch.cat([hist.cpu() - 1, (t.cpu() - 1).view(1)])
        cols.append(torch.cat([(t.cpu() - 1).view(1), sample_negatives(popularity.cpu(), exclude, negatives, g)]))
    cand = torch.stack(cols).to(device)  # (B, 1 + negatives), the target first
    first = torch.zeros_like(target)
    pop = popularity.to(device).float().expand_as(scores)
    out = {}
    for name, s in (("model", scores.float()), ("mostpop", pop)):
        out[f"{name}/full"] = rank_of_target(s.masked_fill(seen, float("-inf")), target).cpu()
        out[f"{name}/pop{negatives}"] = rank_of_target(s.gather(1, cand), first).cpu()
    return out

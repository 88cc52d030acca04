"""Leave-one-out ranking: one evaluator for every protocol in use, for a model and MostPopular alike.

Each user has one held-out item (the target), a history and a row of scores over every item.
The protocols, all computed from the same scores in one vectorised pass per batch:

  * ``full``          every item but the user's history is a candidate (the history is removed;
                      a target that also occurs in the history stays a candidate);
  * ``full_history``  every item is a candidate, the history included: RecBole's full-sort
                      protocol for sequential models (recbole 1.2.1,
                      recbole/data/dataloader/general_dataloader.py, ``FullSortEvalDataLoader``:
                      ``history_index`` is None for sequential models, so only the padding item 0,
                      which has no column here, is masked);
  * ``pop<N>``        the target and N negatives drawn without replacement in proportion to
                      training popularity from the items the user has not seen (BERT4Rec's paper);
  * ``uni<N>``        the same with N uniformly drawn negatives (SASRec's paper).

Negatives are drawn by the Gumbel top-k trick (Kool et al., 2019: keys ``log w + Gumbel``, the N
largest keys are a draw without replacement in proportion to w) with the Gumbel noise made from a
hash of (seed, user, item): no per-user loop, and the same candidates whatever the batch size or
device. A user with fewer than N items left to draw gets all of them (counted in the report,
``candidates``), never an error mid-evaluation.

A rank is the number of candidates scored strictly higher plus half the ties (rounded down), so a
constant scorer gets no free hits. HR@k = rank < k; NDCG@k = 1 / log2(rank + 2) inside the top k
(one relevant item); MRR = 1 / (rank + 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

KS = (1, 5, 10, 20)


def rank_of_target(scores: Tensor, target: Tensor) -> Tensor:
    """scores (B, C), target (B,) column of the true item -> rank (B,) long (ties count half)."""
    t = scores.gather(1, target[:, None])  # (B, 1)
    higher = (scores > t).sum(1).float()
    ties = (scores == t).sum(1).float() - 1  # the target itself is not a tie
    return (higher + ties / 2).floor().long()


def ranking_metrics(ranks: Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1 / log2(rank + 2) inside the top k) and MRR."""
    r = ranks.double()
    out = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2), torch.zeros_like(r)).mean().item()
    out["mrr"] = (1.0 / (r + 1)).mean().item()
    return out


def _i32(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c  # a 32-bit constant as a signed int32


def hashed_uniform(seed: int, users: Tensor, num_items: int) -> Tensor:
    """(B, num_items) float64 in (0, 1), a fixed function of (seed, user, item): Wellons'
    "lowbias32" integer hash of ``user * num_items + item + seed * 0x9E3779B9`` in wrapping int32
    arithmetic (logical shifts emulated by masks), in place to keep it cheap at catalogue scale."""
    base = (users.long() * num_items + seed * 0x9E3779B9) & 0xFFFFFFFF  # (B,) the low 32 bits
    base = torch.where(base >= 1 << 31, base - (1 << 32), base).to(torch.int32)
    x = base[:, None] + torch.arange(num_items, dtype=torch.int32)[None, :]  # (B, N), wraps modulo 2^32
    for mult in (0x7FEB352D, 0x846CA68B):
        x ^= (x >> 16) & 0xFFFF
        x *= _i32(mult)  # wraps modulo 2^32
    x ^= (x >> 16) & 0xFFFF
    return (x.double() + (2.0**31 + 0.5)) / 2.0**32


def sample_candidates(weights: Tensor | None, exclude: Tensor, n: int, users: Tensor, seed: int,
                      gumbel: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """n negatives per user, without replacement, never an excluded item.

    weights (num_items,) draw in proportion (None: uniform); exclude (B, num_items) bool;
    users (B,) seed each row. Returns (columns (B, n') long, valid (B, n') bool), n' = min(n,
    num_items); a row with fewer than n drawable items has ``valid`` False in its last places.
    """
    B, num_items = exclude.shape
    keys = gumbel_noise(seed, users, num_items, exclude.device) if gumbel is None else gumbel
    if weights is not None:
        keys = keys + torch.log(weights.double().to(exclude.device)).float()
    keys = keys.masked_fill(exclude, float("-inf"))
    top = keys.topk(min(n, num_items), dim=1)
    return top.indices, top.values > float("-inf")


def gumbel_noise(seed: int, users: Tensor, num_items: int, device=None) -> Tensor:
    """(B, num_items) float32 Gumbel(0, 1) noise, a fixed function of (seed, user, item)."""
    u = hashed_uniform(seed, users.cpu(), num_items)
    return u.log_().neg_().log_().neg_().float().to(device)


def seen_matrix(histories: list[Tensor], num_items: int, device=None) -> Tensor:
    """(B, num_items) bool: True where column j (item j + 1) is in the row's history."""
    seen = torch.zeros(len(histories), num_items, dtype=torch.bool, device=device)
    if histories:
        lengths = torch.tensor([len(h) for h in histories])
        rows = torch.repeat_interleave(torch.arange(len(histories)), lengths)
        cols = torch.cat([h.long().cpu() for h in histories]) - 1
        seen[rows.to(seen.device), cols.to(seen.device)] = True
    return seen


class RankingEvaluator:
    """Accumulates leave-one-out ranks under every protocol, for the model and MostPopular.

    Args:
        popularity: (num_items,) training-split counts; column j is item j + 1. MostPopular's scores,
            and the weights of the popularity-sampled negatives (a 1e-9 floor keeps every unseen
            item drawable).
        negatives: N for the sampled protocols ``pop<N>`` and ``uni<N>`` (0: full ranking only).
        seed: with the user index, fixes every user's negatives.
        mostpop: also rank MostPopular on the same candidates.
    """

    def __init__(self, popularity: Tensor, negatives: int = 100, seed: int = 0, mostpop: bool = True):
        if negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {negatives}")
        self.popularity = popularity.double().cpu()
        self.negatives, self.seed, self.mostpop = negatives, seed, mostpop
        self.reset()

    def reset(self) -> None:
        self.ranks: dict[str, list[Tensor]] = {}
        self.short: dict[str, list[Tensor]] = {}  # per sampled protocol: candidates drawn per user

    @property
    def protocols(self) -> list[str]:
        sampled = [f"pop{self.negatives}", f"uni{self.negatives}"] if self.negatives else []
        return ["full", "full_history", *sampled]

    def update(self, scores: Tensor, histories: list[Tensor], targets: Tensor, users: Tensor) -> None:
        """scores (B, num_items) column j = item j + 1; histories: B tensors of item ids (1-based);
        targets (B,) item ids; users (B,) stable user indices (they seed the negatives)."""
        scores = scores.float()
        device = scores.device
        B, num_items = scores.shape
        target = targets.to(device).long() - 1  # (B,) column of the true item
        rows = torch.arange(B, device=device)
        seen = seen_matrix(histories, num_items, device)  # (B, num_items)
        seen_not_target = seen.clone()
        seen_not_target[rows, target] = False
        exclude = seen.clone()
        exclude[rows, target] = True  # negatives: never the history, never the target
        cands = {}
        if self.negatives:
            pop = self.popularity.to(device)
            gumbel = gumbel_noise(self.seed, users, num_items, device)  # (B, num_items), shared by both draws
            for proto, w in ((f"pop{self.negatives}", pop + 1e-9), (f"uni{self.negatives}", None)):
                cols, valid = sample_candidates(w, exclude, self.negatives, users, self.seed, gumbel)
                cands[proto] = (torch.cat([target[:, None], cols], 1),
                                torch.cat([torch.ones(B, 1, dtype=torch.bool, device=device), valid], 1))
                self.short.setdefault(proto, []).append(valid.sum(1).cpu())
        who = [("model", scores)]
        if self.mostpop:
            who.append(("mostpop", self.popularity.to(device).float().expand(B, num_items)))
        first = torch.zeros(B, dtype=torch.long, device=device)
        for name, s in who:
            out = {"full": rank_of_target(s.masked_fill(seen_not_target, float("-inf")), target),
                   "full_history": rank_of_target(s, target)}
            for proto, (cols, valid) in cands.items():
                out[proto] = rank_of_target(s.gather(1, cols).masked_fill(~valid, float("-inf")), first)
            for proto, r in out.items():
                self.ranks.setdefault(f"{name}/{proto}", []).append(r.cpu())

    def compute(self, ks: tuple[int, ...] = KS) -> dict:
        """{"users", "protocols": {protocol: {"model": metrics, "mostpop": metrics}}, "candidates":
        {sampled protocol: {"requested", "users_with_fewer", "fewest"}}}."""
        if not self.ranks:
            raise ValueError("no user was ranked")
        report: dict = {"users": int(sum(len(r) for r in self.ranks["model/full"])), "protocols": {}}
        for key, ranks in self.ranks.items():
            who, proto = key.split("/")
            report["protocols"].setdefault(proto, {})[who] = ranking_metrics(torch.cat(ranks), ks)
        report["candidates"] = {
            proto: {"requested": self.negatives, "users_with_fewer": int((torch.cat(d) < self.negatives).sum()),
                    "fewest": int(torch.cat(d).min())}
            for proto, d in self.short.items()}
        return report

"""Recommendations in the data's own item ids: a trained BERT4Rec / SASRec and its item-id map
(``item_ids.json`` in the encoder folder: the data's item id -> the model's item index).

Any history works, a user the training data never had included: unknown items are dropped and
counted; the items of the history are not recommended again (``exclude_seen``)."""

from __future__ import annotations

import torch

from .model import BERT4Rec


class ItemRecommender:
    def __init__(self, model: BERT4Rec, item_ids: dict[str, int]):
        self.model = model.eval()
        self.item_ids = item_ids
        self.items = {index: item for item, index in item_ids.items()}  # model index -> the data's id

    def known(self, history: list[str]) -> list[int]:
        """The model indices of the items in ``history`` it knows, in order."""
        return [self.item_ids[str(i)] for i in history if str(i) in self.item_ids]

    @torch.no_grad()
    def recommend(self, histories: list[list[str]], k: int = 10, exclude_seen: bool = True,
                  batch_size: int = 256) -> list[dict]:
        """One dict per history: ``items`` (top k, the data's ids, best first), ``scores``,
        ``unknown`` (items of the history the model does not know). A history with no known item
        gets ``items: []``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out: list[dict | None] = [None] * len(histories)
        known = [self.known(h) for h in histories]
        rows = [r for r, h in enumerate(known) if h]
        for r, h in enumerate(known):
            if not h:
                out[r] = {"items": [], "scores": [], "unknown": len(histories[r])}
        for b in range(0, len(rows), batch_size):
            idx = rows[b : b + batch_size]
            scores = self.model.item_scores(self.model.user_vectors([known[r] for r in idx])).float()  # (B, N)
            if exclude_seen:
                lengths = torch.tensor([len(known[r]) for r in idx])
                seen_rows = torch.repeat_interleave(torch.arange(len(idx)), lengths)
                seen_cols = torch.tensor([i for r in idx for i in known[r]]) - 1
                scores[seen_rows.to(scores.device), seen_cols.to(scores.device)] = float("-inf")
            top = scores.topk(min(k, scores.shape[1]), dim=1)
            for j, r in enumerate(idx):
                keep = top.values[j] > float("-inf")
                out[r] = {"items": [self.items[int(c) + 1] for c in top.indices[j][keep]],
                          "scores": [round(float(s), 5) for s in top.values[j][keep]],
                          "unknown": len(histories[r]) - len(known[r])}
        return out

"""Interactions -> per-user item sequences with BERT4Rec's conventions.

Item ids are remapped to 1..n in order of first appearance; 0 is PAD and n + 1 is MASK.
Each user's items are ordered by timestamp with a stable sort (ties keep file order, as
RecBole does). Users with fewer than ``min_interactions`` are dropped (counted); with ``item_core``,
items with fewer interactions are dropped too, both filters repeated until every user and item
meets them (the k-core filtering of the BERT4Rec / SASRec papers' preprocessing).
Leave-one-out: the last item is the test target, the one before it the validation target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .readers import Interactions

PAD = 0


@dataclass
class SequenceData:
    users: list[str]  # original user ids, one per sequence
    sequences: list[list[int]]  # remapped item ids in time order
    items: list[str]  # original item id of remapped id i is items[i - 1]
    dropped_users: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def mask_id(self) -> int:
        return self.num_items + 1

    @property
    def vocab_size(self) -> int:  # PAD + items + MASK
        return self.num_items + 2

    def split(self, which: str) -> tuple[list[list[int]], list[int]]:
        """(histories, targets) for 'train' (history only), 'val' or 'test' (leave-one-out)."""
        if which == "train":
            return [s[:-2] for s in self.sequences], []
        if which == "val":
            return [s[:-2] for s in self.sequences], [s[-2] for s in self.sequences]
        if which == "test":
            return [s[:-1] for s in self.sequences], [s[-1] for s in self.sequences]
        raise ValueError(f"split {which!r} is not one of train, val, test")


def build_sequences(inter: Interactions, min_interactions: int = 5, item_core: int = 0) -> SequenceData:
    if min_interactions < 3:
        raise ValueError(f"min_interactions must be >= 3 (train, validation and test items), got {min_interactions}")
    by_user: dict[str, list[tuple[float, str]]] = {}
    for u, i, t in zip(inter.users, inter.items, inter.timestamps, strict=True):
        by_user.setdefault(u, []).append((t, i))
    n_users_read, n_items_read = len(by_user), len(set(inter.items))
    while item_core > 0:  # k-core: drop rare items and short users until both hold
        counts: dict[str, int] = {}
        for events in by_user.values():
            for _, i in events:
                counts[i] = counts.get(i, 0) + 1
        rare = {i for i, c in counts.items() if c < item_core}
        short = [u for u, ev in by_user.items() if len(ev) < min_interactions]
        if not rare and not short:
            break
        by_user = {u: [e for e in ev if e[1] not in rare] for u, ev in by_user.items() if len(ev) >= min_interactions}
        by_user = {u: ev for u, ev in by_user.items() if ev}
    item_index: dict[str, int] = {}
    users, sequences = [], []
    dropped = n_users_read - len(by_user)
    for u, events in by_user.items():
        if len(events) < min_interactions:
            dropped += 1
            continue
        events.sort(key=lambda e: e[0])  # stable: ties keep file order
        seq = [item_index.setdefault(i, len(item_index) + 1) for _, i in events]
        users.append(u)
        sequences.append(seq)
    if not sequences:
        raise ValueError(
            f"no user has >= {min_interactions} interactions (item_core {item_core}; {n_users_read} users read); "
            "lower min_interactions / item_core"
        )
    items = [None] * len(item_index)
    for i, k in item_index.items():
        items[k - 1] = i
    lengths = [len(s) for s in sequences]
    stats = {
        "users": len(sequences), "items": len(items), "interactions": sum(lengths),
        "dropped_users": dropped, "dropped_items": n_items_read - len(items), "skipped_rows": dict(inter.stats.skipped),
        "mean_length": round(sum(lengths) / len(lengths), 1), "max_length": max(lengths),
    }
    return SequenceData(users, sequences, items, dropped, stats)

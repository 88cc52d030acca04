"""Item histories for ``tessera embed``: one vector per user from a BERT4Rec folder.

Inputs (files or folders of them):
  * interaction logs -- ``.inter`` (RecBole), ``.csv`` / ``.tsv`` (header ``user_id, item_id,
    timestamp``), ``.dat`` (MovieLens ``::``), ``.data`` (ML-100k ``u.data``): one unit per user,
    items in time order (ties keep file order), bad rows skipped and counted by the reader;
  * ``.jsonl`` -- one user per line: ``{"user": "42", "items": ["50", "172", ...]}`` in time order;
  * ``.txt`` -- one user per line: item ids separated by spaces or commas, oldest first (the unit's
    id is ``path:line``).
Item ids are the data's own (as in the training data); the folder's ``item_ids.json`` maps them to
the model's indices. Unknown items are skipped and counted; a user left with no known item is
skipped. The vector is BERT4Rec's hidden state at a MASK placed after the user's last
``max_length - 1`` known items: the query it scores the next item with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .base import EMBEDDERS, Collected, Embedder, Unit, files_under

LOGS = (".inter", ".csv", ".tsv", ".dat", ".data")
SUFFIXES = (*LOGS, ".jsonl", ".txt")
ITEM_IDS = "item_ids.json"


def read_item_ids(folder: Path) -> dict[str, int]:
    path = folder / ITEM_IDS
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {ITEM_IDS}; a recsys encoder folder carries its item-id map "
                                "(`tessera fit` with SequenceDataModule and `tessera export` write it)")
    try:
        ids = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); export the encoder again") from None
    if not isinstance(ids, dict) or not all(isinstance(v, int) for v in ids.values()):
        raise ValueError(f"{path} is not a map of item id -> model index; export the encoder again")
    return {str(k): v for k, v in ids.items()}


def load_bert4rec(folder: Path):
    """The BERT4Rec or SASRec network of an encoder folder (a clear error for a folder of another architecture)."""
    import modalities.recsys  # noqa: F401  (registers the "bert4rec" and "sasrec" architectures)
    from modalities.hub import load_encoder, read_config

    arch = read_config(folder).get("architecture")
    if arch not in ("bert4rec", "sasrec"):
        raise ValueError(f"{folder} holds a {arch or 'foreign'!r} encoder, not BERT4Rec or SASRec; give the encoder/ folder of "
                         "a recsys run (configs/recsys/*.yaml)")
    return load_encoder(folder)


def histories_in(path: Path, c: Collected) -> list[tuple[str, list[str]]]:
    """(unit id, the user's item ids in time order) for every user in one input file."""
    suffix = path.suffix.lower()
    if suffix in LOGS:
        from modalities.recsys import read_interactions

        try:
            inter = read_interactions(path)
        except ValueError:
            c.skip("interaction file with no usable row")
            return []
        for reason, n in inter.stats.skipped.items():
            c.skip(f"row: {reason}", n)
        by_user: dict[str, list[tuple[float, str]]] = {}
        for u, i, t in zip(inter.users, inter.items, inter.timestamps, strict=True):
            by_user.setdefault(u, []).append((t, i))
        return [(u, [i for _, i in sorted(ev, key=lambda e: e[0])]) for u, ev in by_user.items()]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        c.skip("unreadable or not UTF-8 file")
        return []
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if suffix == ".jsonl":
            try:
                row = json.loads(line)
                out.append((str(row["user"]), [str(i) for i in row["items"]]))
            except (json.JSONDecodeError, KeyError, TypeError):
                c.skip('.jsonl line without "user" and an "items" list')
        else:
            out.append((f"{path}:{n}", [t for t in re.split(r"[\s,]+", line.strip()) if t]))
    return out


@EMBEDDERS.register("recsys")
class RecsysEmbedder(Embedder):
    batch_size = 256

    def __init__(self, folder: Path, args):
        super().__init__(folder, args)
        self.item_ids = read_item_ids(folder)
        self.model = load_bert4rec(folder)

    def _known(self, items: list[str], c: Collected | None = None) -> list[int]:
        known = [self.item_ids[i] for i in items if i in self.item_ids]
        if c is not None and len(known) < len(items):
            c.skip("unknown item id", len(items) - len(known))
        return known

    def collect(self, inputs: list[str]) -> Collected:
        c = Collected()
        for path in files_under(inputs, SUFFIXES, "item-history"):
            for uid, items in histories_in(path, c):
                known = self._known(items, c)
                if not known:
                    c.skip("user with no known item")
                    continue
                c.units.append(Unit(uid, known, len(known), {"items": len(items), "known_items": len(known)}))
        return c

    def query(self, text: str) -> list[int]:
        """--query "50 172 133": item ids (the data's own), oldest first."""
        known = self._known([t for t in re.split(r"[\s,]+", text.strip()) if t])
        if not known:
            raise ValueError(f"--query {text!r} names no item this encoder knows; give item ids from its item_ids.json")
        return known

    def embed(self, payloads: list[list[int]]) -> torch.Tensor:
        return self.model.user_vectors(payloads)

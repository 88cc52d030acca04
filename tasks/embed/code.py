"""Python code for ``tessera embed``: every function (or, with ``--unit file``, every file) under
the given paths is one unit: [CLS] code [SEP] through a code encoder folder, mean-pooled
(``modalities.code.embed_code``'s machinery).

    tessera embed --encoder runs/code/mlm-tiny/lightning_logs/version_0/encoder mypkg/ --out runs/code/emb
    tessera embed --encoder runs/code/encoder mypkg/ --query mypkg/io.py:read_table   # its nearest functions

The folder is one ``tessera fit --config configs/code/*.yaml`` wrote (weights + tokenizer), one
``tessera export`` made, or a CuBERT folder (HF BERT weights + its vocabulary). Files that cannot be
read or decoded are skipped and counted; a file that does not parse gives no functions (counted)
and, as a whole file (``--unit file``), the lexer's best-effort tokens.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..jobs import UserError
from .base import EMBEDDERS, Collected, Embedder, Unit, files_under

SUFFIXES = (".py",)


def python_files(paths: list[str]) -> list[Path]:
    """Every .py file under the given files / folders (a missing path or a folder without one: an error)."""
    return files_under(paths, SUFFIXES, "Python (.py)")


def collect(paths: list[str], unit: str = "function", max_chars: int = 20000) -> tuple[list[str], list[dict], Counter]:
    """(sources, index rows {"path", "name", "line"}, skipped reasons) for every function or file under ``paths``."""
    from modalities.code import decode_source, extract_functions

    sources, rows, skipped = [], [], Counter()
    for f in python_files(paths):
        try:
            text = decode_source(f.read_bytes())
        except OSError as e:
            skipped[f"unreadable ({type(e).__name__})"] += 1
            continue
        except ValueError as e:
            skipped[str(e).split(":")[0]] += 1
            continue
        if unit == "file":
            sources.append(text)
            rows.append({"path": str(f), "name": None, "line": 1})
            continue
        found = list(extract_functions(text, package="", path=str(f), max_chars=max_chars, min_lines=1))
        if not found:
            skipped["no function (or does not parse)"] += 1
        for fn in found:
            sources.append(fn.source)
            rows.append({"path": str(f), "name": fn.name, "line": fn.line})
    return sources, rows, skipped


def neighbours(vectors: torch.Tensor, i: int, top: int) -> list[tuple[int, float]]:
    """The ``top`` rows most similar to row ``i`` (cosine of unit vectors), itself excluded."""
    sims = vectors @ vectors[i]
    sims[i] = -float("inf")
    values, idx = sims.topk(min(top, len(sims) - 1))
    return list(zip(idx.tolist(), values.tolist(), strict=True))


def same_file_at_1(vectors: torch.Tensor, rows: list[dict], max_queries: int = 2000, seed: int = 0) -> float | None:
    """Share of functions, among those whose file has another, whose nearest neighbour (cosine) is
    from the same file: a label-free check that the vectors carry what code is about. At most
    ``max_queries`` functions (a seeded sample) are asked, so the cost is bounded by max_queries x N."""
    files = [r["path"] for r in rows]
    counts = Counter(files)
    eligible = [i for i, f in enumerate(files) if counts[f] > 1]
    if not eligible:
        return None
    if len(eligible) > max_queries:
        eligible = sorted(np.random.default_rng(seed).choice(eligible, max_queries, replace=False).tolist())
    hits = 0
    for start in range(0, len(eligible), 1024):
        idx = torch.tensor(eligible[start : start + 1024])
        sims = vectors[idx] @ vectors.T  # (q, N)
        sims[torch.arange(len(idx)), idx] = -float("inf")
        hits += sum(files[j] == files[i] for i, j in zip(idx.tolist(), sims.argmax(1).tolist(), strict=True))
    return round(hits / len(eligible), 4)


@EMBEDDERS.register("code")
class CodeEmbedder(Embedder):
    """Python functions or files -> vectors from a code encoder folder (or a CuBERT folder)."""

    batch_size = 32

    def __init__(self, folder: Path, args):
        super().__init__(folder, args)
        from modalities.code import load_code_encoder

        self.encoder, self.tokenizer = load_code_encoder(folder)
        self.encoder.eval()
        self.unit, self.max_chars = args.unit, args.max_chars
        self.max_length = args.code_max_length
        limit = getattr(self.encoder.config, "max_length", None)  # a learned position table's size (as embed_code)
        if limit is not None:
            self.max_length = min(self.max_length, limit)
        if self.max_length < 3:
            raise UserError(f"--code-max-length must leave room for [CLS] code [SEP], got {self.max_length}")
        from modalities.backbone import create_pooler

        self.pool = create_pooler(args.code_pooling, self.encoder.config.hidden_size)

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("--unit", choices=("function", "file"), default="function",
                       help="code: one vector per function (default) or per file")
        p.add_argument("--max-chars", type=int, default=20000, help="code: functions longer than this are left out")
        p.add_argument("--code-max-length", type=int, default=512,
                       help="code: tokens per unit with [CLS] and [SEP]; longer ones are cut")
        p.add_argument("--code-pooling", default="mean", help="code: mean, max or cls over the tokens")

    def _ids(self, source: str) -> tuple[np.ndarray, dict]:
        enc = self.tokenizer.encode(source)
        body = enc.ids[: self.max_length - 2]
        ids = np.concatenate([[self.tokenizer.cls_id], body, [self.tokenizer.sep_id]]).astype(np.int64)
        return ids, {"tokens": len(enc.ids), "truncated": len(enc.ids) > len(body), "error": enc.error}

    def collect(self, inputs: list[str]) -> Collected:
        c = Collected()
        sources, rows, skipped = collect(inputs, self.unit, self.max_chars)
        for reason, n in skipped.items():
            c.skip(reason, n)
        for src, row in zip(sources, rows, strict=True):
            ids, info = self._ids(src)
            uid = f"{row['path']}:{row['name']}" if row["name"] else row["path"]
            c.units.append(Unit(uid, ids, len(ids), {**row, **info}))
        return c

    def query(self, text: str) -> np.ndarray:
        """--query: PATH (a file's code), PATH:NAME (one of its functions), or code itself."""
        path, _, name = text.rpartition(":")
        if name and Path(path).is_file():
            sources, rows, _ = collect([path], "function", self.max_chars)
            hits = [s for s, r in zip(sources, rows, strict=True) if r["name"] == name]
            if not hits:
                raise UserError(f"--query {text}: {path} has no function named {name!r}")
            return self._ids(hits[0])[0]
        if Path(text).is_file():
            sources, _, _ = collect([text], "file", self.max_chars)
            return self._ids(sources[0])[0] if sources else self._ids("")[0]
        return self._ids(text)[0]

    def embed(self, payloads: list[np.ndarray]) -> torch.Tensor:
        T = max(len(p) for p in payloads)
        ids = torch.full((len(payloads), T), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros(len(payloads), T, dtype=torch.bool)
        for b, p in enumerate(payloads):
            ids[b, : len(p)] = torch.from_numpy(p)
            mask[b, : len(p)] = True
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        return self.pool(h.float(), mask)  # (B, D)

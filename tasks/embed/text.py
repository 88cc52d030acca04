"""Text for ``tessera embed``: every non-empty line of the given .txt / .jsonl files is one unit
(a .jsonl line's "text" field), tokenised by the folder's tokenizer.json, pooled as the folder's
metadata says (mean by default). ``--instruction`` (LLM2Vec towers): the instruction is read with
every unit and only the unit's own tokens are pooled (LLM2Vec's ``embed_mask``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import EMBEDDERS, Collected, Embedder, Unit, files_under

SUFFIXES = (".txt", ".jsonl")


@EMBEDDERS.register("text")
class TextEmbedder(Embedder):
    batch_size = 64

    def __init__(self, folder: Path, args):
        super().__init__(folder, args)
        from modalities.cxr.towers import load_text_tower
        from modalities.text.tokenizer import load_tokenizer

        tok = folder / "tokenizer.json"
        if not tok.is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.json; a text encoder folder carries its tokenizer "
                                    "(`tessera fit` and `tessera import` copy it there)")
        self.tokenizer = load_tokenizer(tok)
        self.tower = load_text_tower(folder)
        self.max_length = args.max_length
        limit = getattr(getattr(self.tower, "config", None), "max_position_embeddings", None)
        if limit:
            self.max_length = min(self.max_length, limit)
        self.instruction: list[int] = []
        if getattr(args, "instruction", None):
            if not getattr(getattr(self.tower, "config", None), "skip_instruction", False):
                raise ValueError(f"--instruction: {folder} is a {type(self.tower).__name__}, which pools every token; "
                                 "instructions are for LLM2Vec towers (drop --instruction)")
            self.instruction = self.tokenizer.encode(args.instruction.strip() + " ").ids

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("--max-length", type=int, default=512, help="text: tokens per unit, longer lines are cut")
        p.add_argument("--instruction", default="",
                       help="text, LLM2Vec towers: an instruction read before every unit and query, not pooled "
                            "(e.g. 'Retrieve the impression that matches these findings:')")

    def _encode(self, text: str) -> list[int]:
        if not self.instruction:
            return self.tokenizer.encode(text).ids[: self.max_length]
        own = self.tokenizer.encode(text, add_special_tokens=False).ids
        keep = max(self.max_length - len(self.instruction), 1)
        return self.instruction + own[:keep]

    def collect(self, inputs: list[str]) -> Collected:
        c = Collected()
        for path in files_under(inputs, SUFFIXES, "text (.txt / .jsonl)"):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                c.skip("unreadable or not UTF-8 text file")
                continue
            for n, line in enumerate(lines, 1):
                text = line.strip()
                if path.suffix == ".jsonl" and text:
                    try:
                        text = str(json.loads(text)["text"]).strip()
                    except (json.JSONDecodeError, KeyError, TypeError):
                        c.skip('.jsonl line without a "text" field')
                        continue
                if not text:
                    continue
                ids = self._encode(text)
                c.units.append(Unit(f"{path}:{n}", ids, len(ids), {"text": text[:200]}))
        return c

    def query(self, text: str) -> list[int]:
        return self._encode(text)

    def embed(self, payloads: list[list[int]]) -> torch.Tensor:
        T = max(len(p) for p in payloads)
        ids = torch.zeros(len(payloads), T, dtype=torch.long)
        mask = torch.zeros(len(payloads), T, dtype=torch.bool)
        for b, p in enumerate(payloads):
            ids[b, : len(p)] = torch.tensor(p)
            mask[b, : len(p)] = True
        if not self.instruction:
            return self.tower.encode(ids, mask)
        embed_mask = mask.clone()
        embed_mask[:, : len(self.instruction)] = False  # the instruction is read, not pooled
        return self.tower.encode(ids, mask, embed_mask)

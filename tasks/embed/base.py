"""What ``tessera embed`` asks of a modality: read its inputs into units, embed a batch of them.

    @EMBEDDERS.register("text")
    class TextEmbedder(Embedder):
        def __init__(self, folder, args): ...      # load the encoder (+ tokenizer) from the folder
        def collect(self, inputs) -> Collected: ...   # units (id, payload, length) + skipped counts
        def embed(self, payloads) -> Tensor: ...     # (B, D) float, one batch, same order
        def query(self, text) -> payload            # what --query becomes

A unit is one thing that gets a vector: a line of text, a Python function or file, an audio
file, a user's item history. Units that cannot be read are skipped and counted by reason.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from modalities.registry import Registry


@dataclass
class Unit:
    id: str  # where it came from: "path", "path:line", "path::function", a user id
    payload: Any  # what embed() takes
    length: int  # for batching by length (tokens, samples, items)
    info: dict = field(default_factory=dict)  # written to index.jsonl beside the id


@dataclass
class Collected:
    units: list[Unit] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n


class Embedder:
    """One modality's inputs -> vectors; subclasses register under the modality's name."""

    # default --batch-size for this modality
    batch_size = 32

    def __init__(self, folder: Path, args: argparse.Namespace):
        self.folder, self.args = folder, args

    def collect(self, inputs: list[str]) -> Collected:
        raise NotImplementedError

    def embed(self, payloads: list) -> Tensor:
        raise NotImplementedError

    def query(self, text: str):
        """--query TEXT -> a payload (default: the text itself)."""
        return text

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        """Options of this modality (names must not clash with other modalities')."""


EMBEDDERS: Registry[type[Embedder]] = Registry("embeddable modality")


def files_under(inputs: list[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Every file with one of ``suffixes`` under the given files / folders, sorted; a missing input
    is an error naming it, an input with none of them too."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; give {what} files or folders")
        if p.is_file():
            out.append(p)
            continue
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
        if not found:
            raise ValueError(f"{p} holds no {what} files ({', '.join(suffixes)}); give a folder of {what}")
        out += found
    return out

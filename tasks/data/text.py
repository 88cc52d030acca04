"""Masked-LM data: documents -> WordPiece ids (cached) -> dynamically padded, masked batches.

Masking follows BERT/MosaicBERT: ``mask_ratio`` of the real, non-special tokens are chosen
(0.30 by default, MosaicBERT's value); of those 80% become [MASK], 10% a random token, 10%
stay; labels are -100 everywhere else. Masks are drawn afresh for every training batch (each
epoch differs) and fixed for validation, so validation losses are comparable across epochs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from modalities.text import (
    SPECIAL_TOKENS,
    CorpusStats,
    load_tokenizer,
    python_docstrings,
    read_documents,
    train_wordpiece,
)

from .collate import mask_tokens, pad_batch, seeded_generator
from .fetch import default_cache_dir
from .sampler import resumable_train_loader
from .spec import TokenSpec

STDLIB = "stdlib-docstrings"


class TokenSequences(Dataset):
    """Variable-length id sequences stored flat: ids (total,), offsets (n + 1,)."""

    def __init__(self, ids: Tensor, offsets: Tensor, rows: Tensor):
        self.ids, self.offsets, self.rows = ids, offsets, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[tuple[int, int], Tensor]:
        # key: an index, or (epoch, index) from EpochBatchSampler; returned to seed the masks
        epoch, i = key if isinstance(key, tuple) else (0, key)
        r = int(self.rows[i])
        return (epoch, i), self.ids[self.offsets[r] : self.offsets[r + 1]].long()


class MaskedTextDataModule(TokenSpec, L.LightningDataModule):
    """Text documents for masked-LM pretraining.

    Args:
        corpus: "stdlib-docstrings" (every docstring of this Python's standard library, PSF
            licence, always available offline) or a path to a .txt file / folder of .txt files
            whose documents are separated by blank lines.
        tokenizer: a tokenizer.json (or a folder with one, e.g. an HF model folder); None trains
            an uncased WordPiece of ``vocab_size`` on the training split and caches it.
        vocab_size: size of the trained WordPiece vocabulary (ignored with ``tokenizer``).
        max_length: sequences are truncated to this many tokens ([CLS] and [SEP] included).
        batch_size: sequences per batch (per process); padding is to the longest in the batch.
        mask_ratio: fraction of real tokens chosen for prediction (MosaicBERT: 0.30; BERT: 0.15).
        val_fraction: share of source files held out for validation (split by file, not document).
        max_documents: keep only the first N documents (None: all), for quick runs.
        num_workers: DataLoader worker processes.
        seed: seeds the split-independent shuffle order of every epoch.
        cache_dir: where corpora, tokenizers and ids are cached ($TESSERA_CACHE or ~/.cache/tessera).
    """

    modality = "text"  # written into the encoder folder's meta: `tessera embed` reads lines of text with it

    def __init__(
        self,
        corpus: str = STDLIB,
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        max_length: int = 128,
        batch_size: int = 32,
        mask_ratio: float = 0.3,
        val_fraction: float = 0.05,
        max_documents: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 ([CLS] token [SEP]), got {max_length}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.corpus, self.tokenizer_path = corpus, tokenizer
        self.vocab_size, self.max_length, self.batch_size = vocab_size, max_length, batch_size
        self.mask_ratio, self.val_fraction, self.max_documents = mask_ratio, val_fraction, max_documents
        self.num_workers, self.seed = num_workers, seed
        key = STDLIB if corpus == STDLIB else Path(corpus).stem + "-" + _short_hash(str(Path(corpus).resolve()))
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.folder = self.cache / "text" / key
        self.stats: dict = {}
        self.train_set: TokenSequences | None = None
        self.val_set: TokenSequences | None = None

    # --- preparation (rank 0 only) -------------------------------------------------------
    @property
    def documents_file(self) -> Path:
        return self.folder / "documents.jsonl"

    @property
    def tokenizer_file(self) -> Path:
        return Path(self.tokenizer_path) if self.tokenizer_path else self.folder / f"wordpiece-{self.vocab_size}.json"

    def write_encoder_assets(self, folder: Path) -> None:
        """The tokenizer beside the weights (``tessera embed`` and sentence-transformers read it)."""
        tok = self.tokenizer_file
        tok = tok / "tokenizer.json" if tok.is_dir() else tok
        if tok.is_file():
            shutil.copy2(tok, Path(folder) / "tokenizer.json")

    def _is_val(self, file_id: str) -> bool:
        return int(_short_hash(file_id), 16) % 10_000 < self.val_fraction * 10_000

    def _ids_file(self) -> Path:
        tok_hash = hashlib.sha1(self.tokenizer_file.read_bytes()).hexdigest()[:10]
        return self.folder / f"ids-{tok_hash}-{self.max_length}-{self.max_documents}-{self.val_fraction}.safetensors"

    def _documents(self):
        with self.documents_file.open() as f:
            for i, line in enumerate(f):
                if self.max_documents is not None and i >= self.max_documents:
                    break
                yield json.loads(line)

    def prepare_data(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.documents_file.is_file():
            stats = CorpusStats()
            source = python_docstrings(stats=stats) if self.corpus == STDLIB else read_documents(self.corpus, stats)
            tmp = self.documents_file.with_name(self.documents_file.name + ".partial")
            with tmp.open("w") as f:
                for file_id, text in source:
                    f.write(json.dumps({"file": file_id, "text": text}) + "\n")
            tmp.replace(self.documents_file)  # atomic: an interrupted run never leaves half a corpus
            (self.folder / "corpus_stats.json").write_text(json.dumps(stats.__dict__, indent=2))
            print(f"[data] {self.corpus}: {stats}")
        if self.tokenizer_path is None and not self.tokenizer_file.is_file():
            texts = (d["text"] for d in self._documents() if not self._is_val(d["file"]))
            train_wordpiece(texts, self.vocab_size, self.tokenizer_file)
        ids_file = self._ids_file()
        if not ids_file.is_file():
            tok = load_tokenizer(self.tokenizer_file)
            tok.enable_truncation(self.max_length)
            docs = list(self._documents())
            if not docs:
                raise ValueError(f"corpus {self.corpus} yielded no documents")
            encoded = tok.encode_batch([d["text"] for d in docs])
            lengths = torch.tensor([len(e.ids) for e in encoded])
            tensors = {
                "ids": torch.tensor([i for e in encoded for i in e.ids], dtype=torch.int32),
                "offsets": torch.nn.functional.pad(lengths.cumsum(0), (1, 0)),
                "is_val": torch.tensor([self._is_val(d["file"]) for d in docs]),
            }
            partial = ids_file.with_name(ids_file.name + ".partial")
            save_file(tensors, str(partial))
            partial.replace(ids_file)  # atomic: a killed run leaves no half-written ids behind

    # --- per-process set-up --------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tok = load_tokenizer(self.tokenizer_file)
        self.special_ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None]
        self.mask_token_id = tok.token_to_id("[MASK]")
        self.pad_token_id = tok.token_to_id("[PAD]")
        self.tokenizer_vocab_size = tok.get_vocab_size()
        data = load_file(str(self._ids_file()))
        rows = torch.arange(len(data["is_val"]))
        lengths = data["offsets"].diff()
        keep = lengths >= 3  # [CLS] x [SEP] at least
        train_rows, val_rows = rows[keep & ~data["is_val"]], rows[keep & data["is_val"]]
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise ValueError(
                f"corpus {self.corpus} gives {len(train_rows)} training and {len(val_rows)} validation "
                "documents; give more text or change val_fraction"
            )
        self.train_set = TokenSequences(data["ids"], data["offsets"], train_rows)
        self.val_set = TokenSequences(data["ids"], data["offsets"], val_rows)
        self.stats = {
            "train_documents": len(train_rows),
            "val_documents": len(val_rows),
            "skipped_too_short": int((~keep).sum()),
            "train_tokens": int(lengths[train_rows].sum()),
            "mean_length": round(float(lengths[keep].float().mean()), 1),
            "tokenizer_vocab_size": self.tokenizer_vocab_size,
        }

    def collate(self, items: list[tuple[tuple[int, int], Tensor]], eval_masks: bool = False) -> dict:
        """Pad to the longest sequence and mask. Masks are a function of (seed, epoch, indices):
        new every epoch, identical after a restart, and fixed for evaluation (epoch ignored)."""
        keys = tuple(i for (_, i), _ in items)
        epoch = -1 if eval_masks else items[0][0][0]
        generator = seeded_generator(self.seed, epoch, keys)
        input_ids, attention_mask = pad_batch([ids for _, ids in items], self.pad_token_id)
        maskable = attention_mask & ~torch.isin(input_ids, torch.tensor(self.special_ids))
        first_regular = len(SPECIAL_TOKENS)  # random replacements avoid the special ids 0..4
        inputs, labels = mask_tokens(
            input_ids, maskable, self.mask_token_id, (first_regular, self.tokenizer_vocab_size),
            self.mask_ratio, generator, word_starts=self.word_starts(input_ids),
        )
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}

    def word_starts(self, input_ids: Tensor) -> Tensor | None:
        """(B, T) bool where words begin, for whole-word masking; None: every subword on its own."""
        return None

    def _eval_collate(self, items):
        return self.collate(items, eval_masks=True)

    def train_dataloader(self) -> DataLoader:
        return resumable_train_loader(
            self.train_set, self.batch_size, self.seed, self.trainer, collate_fn=self.collate,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set, batch_size=self.batch_size, shuffle=False, collate_fn=self._eval_collate,
            num_workers=self.num_workers,
        )


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]

"""Python code data: masked-LM chunks from the corpus, and the CuBERT benchmark tasks.

``MaskedCodeDataModule`` yields exactly the batches of ``MaskedTextDataModule`` (``input_ids``,
``attention_mask``, ``labels``), so ``tasks.text.MaskedLMSystem`` pretrains on code unchanged.
Each training sequence is ``[CLS] logical lines [SEP]``: whole logical lines (ending at a
``___NEWLINE___``) packed in order up to ``max_length``; a longer line is cut.

``CodeTaskDataModule`` featurises one benchmark task: ``[CLS] code [SEP]`` (the docstring task:
``[CLS] docstring [SEP] code [SEP]`` with token types 0/1), a label, and for
``variable_misuse_repair`` the pointer targets over token positions (0 = [CLS] = no bug).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from modalities.code import CodeTokenizer, load_code_tokenizer
from modalities.code.lexer import NEWLINE

from .collate import pad_batch
from .fetch import default_cache_dir
from .text import MaskedTextDataModule, TokenSequences
from .sampler import resumable_train_loader

STDLIB = "stdlib"


def chunk_logical_lines(ids: np.ndarray, newline_id: int, max_tokens: int) -> list[np.ndarray]:
    """Split one file's subword ids after every NEWLINE and pack consecutive lines into chunks of
    at most ``max_tokens``; a line longer than that is cut into pieces."""
    ends = np.nonzero(ids == newline_id)[0] + 1
    bounds = [0, *ends.tolist()]
    if bounds[-1] != len(ids):
        bounds.append(len(ids))
    chunks, start = [], 0
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        if b1 - start > max_tokens:  # this line does not fit the open chunk
            if b0 > start:
                chunks.append(ids[start:b0])
            start = b0
            while b1 - start > max_tokens:  # a logical line longer than a chunk
                chunks.append(ids[start : start + max_tokens])
                start += max_tokens
    if len(ids) > start:
        chunks.append(ids[start:])
    return chunks


def _corpus_rows(corpus: str, cache: Path) -> list[dict]:
    """Manifest rows; ``corpus="stdlib"`` builds (once) a stdlib-only manifest in the cache."""
    if corpus == STDLIB:
        folder = cache / "code" / "corpus-stdlib"
        if not (folder / "manifest.jsonl").is_file():
            from modalities.code.corpus import build_corpus, discover

            rows, summary = build_corpus(discover(site_packages=False))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (folder / "stats.json").write_text(json.dumps(summary, indent=2))
        manifest = folder / "manifest.jsonl"
    else:
        manifest = resolve(corpus)
        manifest = manifest / "manifest.jsonl" if manifest.is_dir() else manifest
        if not manifest.is_file():
            raise FileNotFoundError(f"no corpus manifest at {manifest}; run scripts/code_corpus.py, or use corpus: stdlib")
    return [json.loads(line) for line in manifest.open()]


def resolve(path: str | Path) -> Path:
    """``cache:REL`` -> $TESSERA_CACHE/REL (configs name cached artefacts this way); else the path."""
    text = str(path)
    return default_cache_dir() / text.removeprefix("cache:") if text.startswith("cache:") else Path(text)


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


class MaskedCodeDataModule(MaskedTextDataModule):
    """Masked-LM over Python source, CuBERT style.

    Args:
        corpus: "stdlib" (this interpreter's standard library, split by module) or a corpus folder /
            manifest.jsonl written by ``scripts/code_corpus.py`` (its train/valid splits are used).
        tokenizer: a code tokenizer folder, tokenizer.json or CuBERT vocabulary (``cache:REL`` is
            under $TESSERA_CACHE); None trains a
            WordPiece vocabulary of ``vocab_size`` on the training files and caches it.
        vocab_size: size of the trained vocabulary (ignored with ``tokenizer``).
        max_length: tokens per sequence, [CLS] and [SEP] included (CuBERT: 512).
        batch_size, mask_ratio, num_workers, seed: as MaskedTextDataModule.
        max_files: keep an even sample of this many files (None: all), for quick runs.
        cache_dir: where tokenizers and ids are cached ($TESSERA_CACHE or ~/.cache/tessera).
        whole_word: mask whole words (every subword of an identifier, keyword, number or string
            chunk at once; ``mask_ratio`` is then the share of words) instead of single subwords,
            so a name must be predicted from its context, not from its other pieces.
    """

    def __init__(
        self,
        corpus: str = STDLIB,
        tokenizer: str | None = None,
        vocab_size: int = 16384,
        max_length: int = 512,
        batch_size: int = 32,
        mask_ratio: float = 0.15,
        max_files: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        whole_word: bool = False,
    ):
        super().__init__(
            corpus=STDLIB, tokenizer=tokenizer, vocab_size=vocab_size, max_length=max_length,
            batch_size=batch_size, mask_ratio=mask_ratio, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
        )
        self.save_hyperparameters()
        self.corpus = corpus
        self.whole_word = whole_word
        self.max_files = max_files
        key = STDLIB if corpus == STDLIB else "corpus-" + hashlib.sha1(str(resolve(corpus).resolve()).encode()).hexdigest()[:10]
        self.folder = self.cache / "code" / "mlm" / key

    @property
    def tokenizer_file(self) -> Path:
        return resolve(self.tokenizer_path) if self.tokenizer_path else self.folder / f"tokenizer-{self.vocab_size}-{self.max_files}"

    def _rows(self) -> list[dict]:
        rows = [r for r in _corpus_rows(self.corpus, self.cache) if r["split"] in ("train", "valid")]
        if self.max_files is not None and len(rows) > self.max_files:
            rows = rows[:: len(rows) // self.max_files][: self.max_files]
        return rows

    def _ids_file(self) -> Path:
        tok = self.tokenizer_file
        files = sorted(tok.iterdir()) if tok.is_dir() else [tok]
        digest = hashlib.sha1(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()[:10]
        return self.folder / f"ids-{digest}-{self.max_length}-{self.max_files}.safetensors"

    def prepare_data(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = None
        if self.tokenizer_path is None and not self.tokenizer_file.is_dir():
            rows = self._rows()
            sources = (s.decode("utf-8", "replace") for r in rows if r["split"] == "train" and (s := _read(r["path"])))
            CodeTokenizer.train(sources, self.vocab_size).save(self.tokenizer_file)
        ids_file = self._ids_file()
        if ids_file.is_file():
            return
        rows = rows if rows is not None else self._rows()
        tok = load_code_tokenizer(self.tokenizer_file)
        newline = tok.vocab.token_to_id(NEWLINE)
        seqs, is_val, skipped = [], [], Counter()
        for r in tqdm(rows, desc="tokenising code", unit="file", mininterval=2.0):
            data = _read(r["path"])
            enc = tok.encode(data) if data is not None else None
            if enc is None or enc.error is not None:
                skipped["unreadable file" if enc is None else "rejected by tokenize"] += 1
                continue
            for chunk in chunk_logical_lines(enc.ids, newline, self.max_length - 2):
                seqs.append(np.concatenate([[tok.cls_id], chunk, [tok.sep_id]]))
                is_val.append(r["split"] == "valid")
        if not seqs:
            raise ValueError(f"code corpus {self.corpus} gave no sequences (skipped: {dict(skipped)})")
        ids_file.with_suffix(".skipped.json").write_text(json.dumps(dict(skipped)))
        lengths = torch.tensor([len(s) for s in seqs])
        save_file({
            "ids": torch.from_numpy(np.concatenate(seqs).astype(np.int32)),
            "offsets": torch.nn.functional.pad(lengths.cumsum(0), (1, 0)),
            "is_val": torch.tensor(is_val),
        }, str(ids_file))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tok = load_code_tokenizer(self.tokenizer_file)
        self.code_tokenizer = tok
        self.special_ids = tok.special_ids
        self.mask_token_id, self.pad_token_id = tok.mask_id, tok.pad_id
        self.tokenizer_vocab_size = tok.vocab_size
        data = load_file(str(self._ids_file()))
        rows = torch.arange(len(data["is_val"]))
        lengths = data["offsets"].diff()
        keep = lengths >= 3
        train_rows, val_rows = rows[keep & ~data["is_val"]], rows[keep & data["is_val"]]
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise ValueError(f"code corpus {self.corpus} gives {len(train_rows)} training and {len(val_rows)} validation sequences")
        self.train_set = TokenSequences(data["ids"], data["offsets"], train_rows)
        self.val_set = TokenSequences(data["ids"], data["offsets"], val_rows)
        self.stats = {
            "train_sequences": len(train_rows), "val_sequences": len(val_rows),
            "train_tokens": int(lengths[train_rows].sum()), "mean_length": round(float(lengths[keep].float().mean()), 1),
            "tokenizer_vocab_size": self.tokenizer_vocab_size,
        }
        skipped = self._ids_file().with_suffix(".skipped.json")
        self.stats["skipped_files"] = json.loads(skipped.read_text()) if skipped.is_file() else {}

    def word_starts(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        return self.code_tokenizer.word_starts(input_ids) if self.whole_word else None


# --- fine-tuning --------------------------------------------------------------------------
def featurise(example: dict, task: str, tok: CodeTokenizer, max_length: int) -> dict | None:
    """One benchmark example -> ids (and pointer targets); None when its edit site (``site``: the
    bug, or where a clean example's bug would have gone; the hole of exception_type) or the bug
    of a pointer example lies beyond ``max_length`` tokens: the label would be unknowable."""
    enc = tok.encode(example["source"])
    body = enc.ids[: max_length - 2]
    site = example.get("site")  # benchmarks written before sites existed have none
    if site is not None and len(enc.ids) > len(body) and site[1] > int(enc.spans[len(body), 0]):
        return None
    out: dict = {"label": int(example["label"])}
    if task == "function_docstring":
        doc = tok.encode(repr(example["docstring"])).ids[: max_length // 4]
        body = enc.ids[: max_length - 3 - len(doc)]
        ids = np.concatenate([[tok.cls_id], doc, [tok.sep_id], body, [tok.sep_id]])
        out["token_type_ids"] = torch.tensor([0] * (len(doc) + 2) + [1] * (len(body) + 1))
    else:
        ids = np.concatenate([[tok.cls_id], body, [tok.sep_id]])
    out["input_ids"] = torch.from_numpy(ids.astype(np.int64))
    if task == "variable_misuse_repair":
        first = {}  # char start -> token position ([CLS] is position 0)
        for k, s in enumerate(enc.spans[: len(body), 0].tolist()):
            first.setdefault(s, k + 1)
        err = example["error_span"]
        error_pos = 0 if err is None else first.get(err[0], -1)
        if error_pos < 0:
            return None
        cands = [first[s] for s, _ in example["candidate_spans"] if s in first]
        targets = [first[s] for s, _ in example["target_spans"] if s in first]
        if err is not None and not targets:
            return None
        out.update(error_position=error_pos, candidates=torch.tensor(cands, dtype=torch.long),
                   targets=torch.tensor(targets, dtype=torch.long))
    return out


def read_split(benchmark: Path, task: str, split: str, max_examples: int | None = None, seed: int = 0) -> list[dict]:
    """The examples of <benchmark>/<task>/<split>.jsonl; with ``max_examples``, a seeded sample of
    that many in file order (what fine-tuning and scripts/code_misuse_mlm.py both read)."""
    path = Path(benchmark) / task / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run scripts/code_benchmark.py --tasks {task}")
    rows = [json.loads(line) for line in path.open()]
    if max_examples is not None and len(rows) > max_examples:
        g = np.random.default_rng(seed)
        rows = [rows[i] for i in sorted(g.choice(len(rows), max_examples, replace=False))]
    return rows


def collate_examples(items: list[dict], pad_id: int) -> dict:
    """Featurised examples (``featurise``) -> a padded batch; pointer examples add candidate / target masks."""
    ids, mask = pad_batch([it["input_ids"] for it in items], pad_id)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([it["label"] for it in items])}
    if "token_type_ids" in items[0]:
        batch["token_type_ids"] = pad_batch([it["token_type_ids"] for it in items], 0)[0]
    if "error_position" in items[0]:
        B, T = ids.shape
        cand = torch.zeros(B, T, dtype=torch.bool)
        tgt = torch.zeros(B, T, dtype=torch.bool)
        for b, it in enumerate(items):
            cand[b, it["candidates"]] = True
            tgt[b, it["targets"]] = True
        batch.update(error_position=torch.tensor([it["error_position"] for it in items]),
                     candidate_mask=cand, target_mask=tgt)
    return batch


class _Examples(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        _, i = key if isinstance(key, tuple) else (0, key)
        return self.items[i]


class CodeTaskDataModule(L.LightningDataModule):
    """One CuBERT benchmark task (``scripts/code_benchmark.py`` writes them).

    Args:
        task: a task name of ``modalities.code.TASKS``.
        benchmark: the benchmark folder (holds <task>/{train,valid,test}.jsonl); ``cache:REL`` is
            under $TESSERA_CACHE.
        tokenizer: the encoder's code tokenizer (folder / tokenizer.json / CuBERT vocabulary);
            ``cache:REL`` as for benchmark.
        max_length: tokens per example, specials included; longer code is cut (CuBERT: 512).
        batch_size: examples per batch.
        max_examples: cap per split (a seeded sample; None: all), for quick runs.
        num_workers, seed: loader workers; shuffle seed.
    """

    def __init__(self, task: str, benchmark: str, tokenizer: str, max_length: int = 512, batch_size: int = 32,
                 max_examples: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.task, self.benchmark = task, resolve(benchmark)
        self.tokenizer_path, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        self.max_examples, self.num_workers, self.seed = max_examples, num_workers, seed
        self.sets: dict[str, _Examples] = {}
        self.stats: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        tok = load_code_tokenizer(resolve(self.tokenizer_path))
        self.pad_token_id = tok.pad_id
        self.tokenizer_vocab_size = tok.vocab_size
        labels_seen: set[int] = set()
        for split in ("train", "valid", "test"):
            rows = read_split(self.benchmark, self.task, split, self.max_examples, self.seed)
            items = [f for r in rows if (f := featurise(r, self.task, tok, self.max_length)) is not None]
            labels_seen |= {it["label"] for it in items}
            self.sets[split] = _Examples(items)
            self.stats[split] = {"examples": len(items), "dropped_site_cut_off": len(rows) - len(items),
                                 "labels": dict(Counter(it["label"] for it in items))}
        self.num_classes = max(labels_seen) + 1

    def collate(self, items: list[dict]) -> dict:
        return collate_examples(items, self.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return resumable_train_loader(self.sets["train"], self.batch_size, self.seed, self.trainer,
                                      collate_fn=self.collate, num_workers=self.num_workers)

    def _eval(self, split: str) -> DataLoader:
        return DataLoader(self.sets[split], batch_size=self.batch_size, shuffle=False, collate_fn=self.collate,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")


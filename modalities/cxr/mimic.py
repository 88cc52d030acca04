"""MIMIC-CXR / MIMIC-CXR-JPG: reports sectioned as the release's own preprocessing does, the
official split, CheXpert labels per study, and the JPG folder layout.

Format sources: MIT-LCP/mimic-cxr ``txt/section_parser.py`` (``section_text``: a section header is
an upper-case name followed by ":" at the start of an indented line; names normalised, e.g.
"FINDINGS AND IMPRESSION" -> impression, "CONCLUSION" -> impression; empty findings / impression
sections dropped; with neither, the last paragraph becomes "last_paragraph") and
``txt/create_section_files.py`` (one row per study: impression, findings, last_paragraph,
comparison); MIMIC-CXR-JPG 2.0.0's ``mimic-cxr-2.0.0-split.csv`` (dicom_id, study_id,
subject_id, split in train / validate / test) and ``mimic-cxr-2.0.0-chexpert.csv`` (subject_id,
study_id and the 14 CheXpert observations); images at
``files/p<first 2 digits of subject>/p<subject>/s<study>/<dicom_id>.jpg``; reports (the
``mimic-cxr-reports.zip`` of MIMIC-CXR) at ``files/p../p<subject>/s<study>.txt``.

A report with neither findings nor impression uses its last paragraph as the impression (the
column create_section_files.py writes it to is ``last_paragraph``); ``Report.indication`` keeps
the section name the text came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..stats import ReadStats
from .chexpert import BadRow, Labels, LabelStats, _open_csv, parse_labels
from .reports import Report, _keep, clean

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
# header names (lower case) -> the section they are (a subset of the parser's table; the rest by keyword)
_NAMES = {
    "findings and impression": "impression", "findings/impression": "impression", "conclusion": "impression",
    "impresson": "impression", "impession": "impression", "impresion": "impression",
    "finding": "findings", "findngs": "findings", "chest, two views": "findings",
    "comparisons": "comparison", "clinical history": "history", "reason for exam": "indication",
    "reason for examination": "indication", "clinical indication": "indication", "exam": "examination",
}
_MAIN = ("impression", "findings", "history", "comparison", "addendum")
SPLITS = {"train": "train", "validate": "val", "test": "test"}  # the split file's names -> ours


def _normalise(name: str) -> str:
    name = name.lower().strip()
    if name in _NAMES:
        return _NAMES[name]
    return next((m for m in _MAIN if m in name), name)


def section_report(text: str) -> dict[str, str]:
    """A MIMIC-CXR free-text report -> {section name: text} ("preamble", "findings",
    "impression", "comparison", ..., "last_paragraph"); the first occurrence of a name wins."""
    text = text.replace("\r\n", "\n")
    spans: list[tuple[str, str]] = []
    m = _HEADER.search(text)
    if m is None:
        spans.append(("full report", text))
    else:
        spans.append(("preamble", text[: m.start(1)]))
        while m is not None:
            name, start = m.group(1), m.end()
            skip = text.find("\n", start)  # the next header starts on a later line
            m = _HEADER.search(text, start + (skip - start if skip >= 0 else 0))
            spans.append((_normalise(name), text[start : m.start() if m else len(text)]))
    spans = [(n, t) for n, t in spans if not (n in ("findings", "impression") and not t.strip())]
    names = {n for n, _ in spans}
    if "findings" not in names and "impression" not in names and "\n \n" in spans[-1][1]:
        name, body = spans[-1]
        head, *rest = body.split("\n \n")
        spans[-1] = (name, head)
        spans.append(("last_paragraph", "\n \n".join(rest)))
    out: dict[str, str] = {}
    for n, t in spans:
        out.setdefault(n, clean(t))
    return out


def report_from_text(uid: str, text: str, images: list[str] | None = None) -> Report:
    """A Report with findings / impression as the sections give them (last paragraph as the impression otherwise)."""
    sec = section_report(text)
    findings, impression = sec.get("findings", ""), sec.get("impression", "")
    source = "impression"
    if not findings and not impression and sec.get("last_paragraph"):
        impression, source = sec["last_paragraph"], "last_paragraph"
    return Report(uid, findings, impression, indication=source, images=list(images or []))


def image_path(subject_id: str, study_id: str, dicom_id: str, suffix: str = ".jpg") -> str:
    """MIMIC-CXR-JPG's relative image path of a dicom id."""
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}/{dicom_id}{suffix}"


def report_path(subject_id: str, study_id: str) -> str:
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}.txt"


@dataclass
class SplitRow:
    dicom_id: str
    study_id: str
    subject_id: str
    split: str  # train / val / test


def read_split_csv(path: str | Path, stats: LabelStats | None = None) -> list[SplitRow]:
    """``mimic-cxr-2.0.0-split.csv``; rows with an unknown split or a non-numeric id are skipped and counted."""
    path = Path(path)
    stats = stats if stats is not None else LabelStats(unit="images")
    f, reader = _open_csv(path, ("dicom_id", "study_id", "subject_id", "split"), "MIMIC-CXR-JPG's mimic-cxr-2.0.0-split.csv")
    stats.files += 1
    rows = []
    with f:
        for n, row in enumerate(reader, 2):
            try:
                for col in ("study_id", "subject_id"):
                    if not (row[col] or "").strip().isdigit():
                        raise BadRow(col, f"{(row[col] or '')[:20]!r} is not a number")
                if not (row["dicom_id"] or "").strip():
                    raise BadRow("dicom_id", "empty")
                if row["split"] not in SPLITS:
                    raise BadRow("split", f"{(row['split'] or '')[:20]!r} is not train, validate or test")
            except BadRow as e:
                stats.bad(f"{path}:{n}", e)
                continue
            stats.records += 1
            rows.append(SplitRow(row["dicom_id"].strip(), row["study_id"].strip(), row["subject_id"].strip(),
                                 SPLITS[row["split"]]))
    if not rows:
        raise ValueError(f"{path} holds no usable split row; first: {stats.examples[0] if stats.examples else 'no rows'}")
    return rows


def read_study_labels(path: str | Path, stats: LabelStats | None = None) -> dict[str, Labels]:
    """``mimic-cxr-2.0.0-chexpert.csv`` -> {study_id: Labels}; bad rows skipped and counted by column."""
    path = Path(path)
    stats = stats if stats is not None else LabelStats(unit="studies")
    f, reader = _open_csv(path, ("subject_id", "study_id"), "MIMIC-CXR-JPG's mimic-cxr-2.0.0-chexpert.csv")
    stats.files += 1
    out = {}
    with f:
        for n, row in enumerate(reader, 2):
            try:
                if not (row["study_id"] or "").strip().isdigit():
                    raise BadRow("study_id", f"{(row['study_id'] or '')[:20]!r} is not a number")
                labels = parse_labels(row)
            except BadRow as e:
                stats.bad(f"{path}:{n}", e)
                continue
            stats.records += 1
            out[row["study_id"].strip()] = labels
    if not out:
        raise ValueError(f"{path} holds no usable label row; first: {stats.examples[0] if stats.examples else 'no rows'}")
    return out


def read_sectioned_csv(path: str | Path, stats: ReadStats | None = None) -> dict[str, Report]:
    """create_section_files.py's output (``mimic_cxr_sectioned.csv``: study, impression, findings,
    last_paragraph, comparison) -> {study_id without the "s": Report}."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats(unit="reports")
    f, reader = _open_csv(path, ("study", "impression", "findings"), "create_section_files.py's mimic_cxr_sectioned.csv")
    stats.files += 1
    out = {}
    with f:
        for row in reader:
            study = (row["study"] or "").strip().lstrip("s")
            impression = clean(row.get("impression")) or clean(row.get("last_paragraph"))
            rep = Report(study, clean(row.get("findings")), impression)
            if study and _keep(rep, stats):
                out[study] = rep
    return out


def read_study_reports(root: str | Path, studies: set[tuple[str, str]], stats: ReadStats | None = None) -> dict[str, Report]:
    """{study_id: Report} for (subject_id, study_id) pairs from ``root/files/p../p<subject>/s<study>.txt``;
    missing or unreadable reports, and those with no findings, impression or last paragraph, are counted."""
    root = Path(root)
    stats = stats if stats is not None else ReadStats(unit="reports")
    out = {}
    for subject, study in sorted(studies):
        path = root / report_path(subject, study)
        stats.files += 1
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            stats.skip("report file missing")
            continue
        except (OSError, UnicodeDecodeError):
            stats.skip("unreadable report file")
            continue
        rep = report_from_text(study, text)
        if _keep(rep, stats):
            out[study] = rep
    return out


def iter_pairs(rows: list[SplitRow], reports: dict[str, Report], split: str | None = None) -> Iterator[tuple[SplitRow, Report]]:
    """(image row, its study's report) for the rows of ``split`` (all when None) whose study has a report."""
    for r in rows:
        if (split is None or r.split == split) and r.study_id in reports:
            yield r, reports[r.study_id]

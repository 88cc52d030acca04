"""The real Python code available offline: this interpreter's standard library and the
site-packages of the running environment, filtered by licence, deduplicated, split by package.

    files = discover()                      # SourceFile per .py file, with package and licence
    rows, stats = build_corpus(files)       # lex, dedupe by normalised token hash, split

A *package* is a distribution (``numpy``) or a top-level stdlib module (``stdlib/asyncio``);
no package appears in two splits, so the benchmark built from the splits never tests on code
whose package was seen in training. Only permissively licensed distributions are kept; the
licence is read from the distribution's metadata (``License-Expression``, then ``License ::``
classifiers, then a short ``License`` field); anything unknown is left out.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as metadata
import re
import sysconfig
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..stats import ReadStats
from .lexer import lex

SPLITS = ("train", "valid", "test")
# SPDX identifiers (and classifier / free-text spellings) that allow reuse with attribution only
_PERMISSIVE_SPDX = re.compile(
    r"^(MIT(-0|-CMU)?|BSD-[234]-Clause.*|0BSD|Apache-2\.0|Apache-2\.0 WITH LLVM-exception|PSF-2\.0|Python-2\.0(\.1)?|"
    r"ISC|Unlicense|Zlib|CNRI-Python|HPND|CC0-1\.0|BSL-1\.0|X11|NCSA)$",
    re.I,
)
_PERMISSIVE_TEXT = re.compile(
    r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|Unlicense|zlib|public domain|CC0)\b", re.I
)
_COPYLEFT_TEXT = re.compile(r"GPL|MPL|Mozilla|EPL|Eclipse|CDDL|Proprietary|NVIDIA|commercial|EUPL|OSL", re.I)


@dataclass
class SourceFile:
    path: str  # absolute path on this machine
    package: str  # split unit: a distribution name, or stdlib/<top-level module>
    licence: str  # what the metadata says (SPDX expression, classifier or text)


def licence_of(dist: metadata.Distribution) -> tuple[str, bool]:
    """(licence as declared, permissive?) for an installed distribution."""
    md = dist.metadata
    expr = (md.get("License-Expression") or "").strip()
    if expr:
        alternatives = re.split(r"\s+OR\s+", expr.strip("() "))
        ok = any(
            all(_PERMISSIVE_SPDX.match(term.strip("() ")) for term in re.split(r"\s+AND\s+", alt))
            for alt in alternatives
        )
        return expr, ok
    classifiers = [c.split("::")[-1].strip() for c in (md.get_all("Classifier") or []) if c.startswith("License ::")]
    if classifiers:
        text = "; ".join(classifiers)
        return text, bool(_PERMISSIVE_TEXT.search(text)) and not _COPYLEFT_TEXT.search(text)
    field = (md.get("License") or "").strip()
    if field and len(field) <= 80:  # a name, not a pasted licence text
        return field, bool(_PERMISSIVE_TEXT.search(field)) and not _COPYLEFT_TEXT.search(field)
    return (field[:40] + "...") if field else "unknown", False


def stdlib_files(root: str | Path | None = None) -> Iterator[SourceFile]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("site-packages", "dist-packages") or "site-packages" in rel.parts:
            continue
        top = rel.parts[0].removesuffix(".py")
        yield SourceFile(str(path), f"stdlib/{top}", "PSF-2.0")


def site_package_files(stats: ReadStats, exclude: Iterable[str] = ("tessera",)) -> Iterator[SourceFile]:
    """.py files of every installed distribution with a permissive licence (others counted)."""
    seen: set[str] = set()
    skip = {e.lower() for e in exclude}
    dists = sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if not name or name in seen or name in skip:
            continue
        seen.add(name)
        files = [f for f in (dist.files or []) if str(f).endswith(".py")]
        if not files:
            continue
        licence, ok = licence_of(dist)
        if not ok:
            stats.excluded[name] = licence
            continue
        for f in sorted(files, key=str):
            path = Path(dist.locate_file(f))
            if path.is_file():
                yield SourceFile(str(path), name, licence)


class CorpusStats(ReadStats):
    def __init__(self):
        super().__init__(unit="files")
        self.excluded: dict[str, str] = {}  # distribution -> licence that kept it out


def discover(stats: CorpusStats | None = None, site_packages: bool = True) -> list[SourceFile]:
    stats = stats if stats is not None else CorpusStats()
    files = list(stdlib_files())
    if site_packages:
        files += list(site_package_files(stats))
    return files


def normalised_hash(source: str | bytes) -> tuple[str | None, dict]:
    """sha1 of the lexeme sequence (comments, blank lines and spacing ignored) and file facts;
    (None, {"error": ...}) when the file cannot be read as Python 3."""
    lexed = lex(source)
    if lexed.error is not None:
        return None, {"error": lexed.error}
    text = lexed.source
    facts = {"chars": len(text), "lines": text.count("\n") + (not text.endswith("\n") and bool(text)),
             "lexemes": len(lexed.tokens)}
    h = hashlib.sha1("\x00".join(t.text for t in lexed.tokens if t.kind != "nl").encode()).hexdigest()
    return h, facts


def _examine(f: SourceFile) -> dict:
    try:
        data = Path(f.path).read_bytes()
    except OSError as e:
        return {"skip": f"unreadable file ({type(e).__name__})"}
    h, facts = normalised_hash(data)
    if h is None:
        err = facts["error"]
        reason = "null bytes" if "null" in err else "not decodable" if "decodable" in err else "tokenize error"
        return {"skip": reason}
    if facts["lexemes"] == 0:
        return {"skip": "empty file"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old code
            ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {"skip": "not Python 3 (ast.parse fails)"}
    return {"hash": h, **facts}


def assign_splits(package_sizes: dict[str, int], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    """Packages -> split, whole packages only. Packages are visited in a seeded hash order, largest
    first within the big ones, each going to the split furthest below its share of files."""
    total = sum(package_sizes.values()) or 1
    order = sorted(package_sizes, key=lambda p: hashlib.sha1(f"{seed}:{p}".encode()).hexdigest())
    # the few packages bigger than a tenth of a small split go first, so shares can be met
    order.sort(key=lambda p: -package_sizes[p] if package_sizes[p] > total * min(fractions) / 4 else 0)
    filled = dict.fromkeys(SPLITS, 0)
    out = {}
    for p in order:
        split = min(SPLITS, key=lambda s: filled[s] / total - fractions[SPLITS.index(s)])
        out[p] = split
        filled[split] += package_sizes[p]
    return out


def build_corpus(
    files: list[SourceFile], stats: CorpusStats | None = None, seed: int = 0, fractions=(0.8, 0.1, 0.1),
    workers: int = 1, progress: bool = True,
) -> tuple[list[dict], dict]:
    """Lex every file, drop unreadable ones and duplicates (first in path order kept), split by
    package. Returns the manifest rows and the statistics."""
    stats = stats if stats is not None else CorpusStats()
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            results = list(_progress(pool.imap(_examine, files, chunksize=16), len(files), progress))
    else:
        results = list(_progress(map(_examine, files), len(files), progress))
    rows, seen = [], {}
    duplicates = 0
    for f, r in zip(files, results, strict=True):
        if "skip" in r:
            stats.skip(r["skip"])
            continue
        if r["hash"] in seen:
            duplicates += 1
            stats.skip("duplicate (same normalised tokens)")
            continue
        seen[r["hash"]] = f.path
        stats.files += 1
        rows.append({**asdict(f), **r})
    sizes = Counter(r["package"] for r in rows)
    split_of = assign_splits(dict(sizes), fractions, seed)
    for r in rows:
        r["split"] = split_of[r["package"]]
    summary = {
        "files_seen": len(files),
        "files_kept": len(rows),
        "duplicates_removed": duplicates,
        "skipped": dict(sorted(stats.skipped.items())),
        "distributions_excluded_by_licence": dict(sorted(stats.excluded.items())),
        "splits": {},
    }
    for s in SPLITS:
        part = [r for r in rows if r["split"] == s]
        summary["splits"][s] = {
            "packages": len({r["package"] for r in part}),
            "files": len(part),
            "lines": sum(r["lines"] for r in part),
            "chars": sum(r["chars"] for r in part),
            "lexemes": sum(r["lexemes"] for r in part),
        }
    pkgs = {s: {r["package"] for r in rows if r["split"] == s} for s in SPLITS}
    assert not (pkgs["train"] & pkgs["valid"] or pkgs["train"] & pkgs["test"] or pkgs["valid"] & pkgs["test"])
    return rows, summary


def _progress(it, total: int, enabled: bool):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="lexing corpus", unit="file", mininterval=2.0)

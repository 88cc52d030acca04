"""Offline text corpora: docstrings of the Python standard library, or the user's text files.

Readers skip bad records (unreadable files, syntax errors, empty documents) and count them
in a ``CorpusStats`` instead of stopping.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ..stats import ReadStats


def CorpusStats() -> ReadStats:  # noqa: N802  (a ReadStats counting documents)
    return ReadStats(unit="documents")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def python_docstrings(
    root: str | Path | None = None, min_chars: int = 20, stats: ReadStats | None = None
) -> Iterator[tuple[str, str]]:
    """Yield (file id, docstring) for every module, class and function docstring under root.

    Default root: this interpreter's standard library (PSF licence), skipping site-packages
    and test folders' data files.
    """
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a folder")
    stats = stats if stats is not None else CorpusStats()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "site-packages" in rel or "dist-packages" in rel:
            continue
        try:
            source = path.read_bytes().decode("utf-8")
            tree = ast.parse(source)
        except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, OSError):
            stats.skip("unparsable file")
            continue
        stats.files += 1
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc is None:
                    continue
                if len(doc.strip()) < min_chars:
                    stats.skip("short docstring")
                    continue
                stats.records += 1
                yield rel, doc


def read_documents(path: str | Path, stats: ReadStats | None = None) -> Iterator[tuple[str, str]]:
    """Yield (file id, document) from a .txt file (blank-line separated documents) or a folder of them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text corpus {path} does not exist; give a .txt file or a folder of .txt files")
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"text corpus folder {path} holds no .txt files")
    stats = stats if stats is not None else CorpusStats()
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            stats.skip("unreadable or non-UTF-8 file")
            continue
        stats.files += 1
        for doc in text.split("\n\n"):
            if doc.strip():
                stats.records += 1
                yield f.name, doc.strip()
            else:
                stats.skip("empty document")

"""ETH Py150 Open (and the original ETH Py150 file lists) as a code corpus manifest.

Format sources: google-research-datasets/eth_py150_open ``README.md`` (three JSON manifests,
one per split ``train`` / ``dev`` / ``eval``, each a list of {"filepath", "license"}; dev and
train are a 90/10 file split of Py150's training files) and the Hugging Face loader
``datasets/eth_py150_open/eth_py150_open.py`` (file names ``train__manifest.json``,
``dev__manifest.json``, ``eval__manifest.json``); the original Py150 release
(https://www.sri.inf.ethz.ch/py150) lists its files in ``python100k_train.txt`` and
``python50k_eval.txt``, one path a line relative to the archive's root (``data/<owner>/<repo>/...``).

Neither manifest carries code: the files come from Py150's ``data`` archive, which the user
unpacks (``root``). A listed path is looked up as ``root/<path>`` then ``root/data/<path>``.
Rows are this project's corpus rows ({"path", "package", "split", "licence", "hash", ...}; the
package is ``<owner>/<repo>``), so ``tessera prepare code-benchmark --corpus`` and the masked-LM
data module read them as they read the stdlib corpus. ETH's own split is kept (dev -> valid,
eval -> test); with the original lists, a stable 10 % of the training files (by path hash) is
the valid split, as ETH Py150 Open's dev split is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..stats import ReadStats
from .corpus import normalised_hash

ETH_MANIFESTS = {"train": "train__manifest.json", "valid": "dev__manifest.json", "test": "eval__manifest.json"}
PY150_LISTS = {"train": "python100k_train.txt", "test": "python50k_eval.txt"}


def manifest_kind(folder: str | Path) -> str | None:
    """"eth" (ETH Py150 Open's JSON manifests), "py150" (the original lists) or None."""
    folder = Path(folder)
    if all((folder / n).is_file() for n in ETH_MANIFESTS.values()):
        return "eth"
    if all((folder / n).is_file() for n in PY150_LISTS.values()):
        return "py150"
    return None


def _package(path: str) -> str:
    parts = Path(path).parts
    parts = parts[1:] if parts and parts[0] == "data" else parts
    return "/".join(parts[:2]) if len(parts) >= 3 else (parts[0] if parts else "")


def _listed(folder: Path, kind: str, stats: ReadStats) -> Iterable[tuple[str, str, str]]:
    """(relative path, split, licence) of every listed file; malformed entries are counted."""
    if kind == "eth":
        for split, name in ETH_MANIFESTS.items():
            path = folder / name
            stats.files += 1
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path} is not a JSON manifest ({type(e).__name__}); ETH Py150 Open's is a list of "
                                 '{"filepath": ..., "license": ...}') from None
            if not isinstance(entries, list):
                raise ValueError(f"{path}: expected a JSON list of {{\"filepath\", \"license\"}}, got {type(entries).__name__}")
            for e in entries:
                if not isinstance(e, dict) or not isinstance(e.get("filepath"), str) or not e["filepath"]:
                    stats.skip(f"{name}: entry without a 'filepath' string")
                    continue
                yield e["filepath"], split, str(e.get("license", "unknown"))
    else:
        for split, name in PY150_LISTS.items():
            stats.files += 1
            for line in (folder / name).read_text(encoding="utf-8", errors="replace").splitlines():
                rel = line.strip()
                if not rel:
                    continue
                if split == "train" and int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 10 == 0:
                    yield rel, "valid", "unknown"
                else:
                    yield rel, split, "unknown"


def py150_rows(manifests: str | Path, root: str | Path, stats: ReadStats | None = None,
               max_files: int | None = None) -> list[dict]:
    """Corpus rows of every listed file found under ``root`` that lexes as Python 3; missing and
    unreadable files are skipped and counted. ``max_files``: the first that many per split."""
    folder, root = Path(manifests), Path(root)
    stats = stats if stats is not None else ReadStats(unit="files")
    kind = manifest_kind(folder)
    if kind is None:
        raise FileNotFoundError(f"{folder} holds neither ETH Py150 Open's {', '.join(ETH_MANIFESTS.values())} nor "
                                f"Py150's {', '.join(PY150_LISTS.values())}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the folder where Py150's data archive is unpacked")
    rows, per_split, seen = [], {}, set()
    for rel, split, licence in _listed(folder, kind, stats):
        if max_files is not None and per_split.get(split, 0) >= max_files:
            continue
        path = next((p for p in (root / rel, root / "data" / rel) if p.is_file()), None)
        if path is None:
            stats.skip("listed file not under the root")
            continue
        try:
            data = path.read_bytes()
        except OSError:
            stats.skip("unreadable file")
            continue
        h, facts = normalised_hash(data)
        if h is None:
            stats.skip("not Python 3 (does not lex)")
            continue
        if h in seen:
            stats.skip("duplicate (same tokens as an earlier file)")
            continue
        seen.add(h)
        stats.records += 1
        per_split[split] = per_split.get(split, 0) + 1
        rows.append({"path": str(path.resolve()), "package": _package(rel), "licence": licence, "split": split,
                     "hash": h, **facts, "source": kind})
    if not rows:
        raise ValueError(f"none of the files {folder} lists is under {root} ({stats}); give --root the folder "
                         "holding Py150's unpacked data/")
    return rows

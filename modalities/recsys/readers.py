"""Readers of interaction logs: MovieLens ratings.dat (``::``), ML-100k ``u.data`` (tab),
RecBole atomic ``.inter`` files, and CSV/TSV with a column mapping.

Every reader returns ``Interactions`` in file order; bad rows (wrong field count, non-numeric or
non-finite timestamp, empty ids) and exact duplicates of an earlier row are skipped and counted in
``stats``, never fatal. A file with no
usable row, or with missing columns, is a ``ValueError`` naming the file and what to do.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..stats import ReadStats


@dataclass
class Interactions:
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    stats: ReadStats = field(default_factory=lambda: ReadStats(unit="interactions"))
    _rows: set = field(default_factory=set, repr=False)  # every row read, to drop exact duplicates

    def add(self, user: str, item: str, ts: str, row: tuple | None = None) -> None:
        """One row; ``row`` is the whole raw row (all its fields), the key for exact duplicates."""
        try:
            t = float(ts)
        except ValueError:
            self.stats.skip("non-numeric timestamp")
            return
        if not math.isfinite(t):  # "nan", "inf": no place in a time order
            self.stats.skip("non-finite timestamp")
            return
        if not user or not item:
            self.stats.skip("empty user or item id")
            return
        key = row if row is not None else (user, item, ts)
        if key in self._rows:
            self.stats.skip("exact duplicate row")
            return
        self._rows.add(key)
        self.users.append(user)
        self.items.append(item)
        self.timestamps.append(t)
        self.stats.records += 1

    def __len__(self) -> int:
        return len(self.users)


def _lines(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"interaction file {path} does not exist")
    with path.open(encoding="utf-8", errors="replace") as f:
        yield from f


def _finish(inter: Interactions, path: Path) -> Interactions:
    inter.stats.files = 1
    inter._rows = set()  # only needed while reading
    if not len(inter):
        raise ValueError(f"{path} holds no usable interaction ({inter.stats}); check the file and its format")
    return inter


def read_delimited(path: str | Path, sep: str, fields: int = 4) -> Interactions:
    """``user<sep>item<sep>rating<sep>timestamp`` lines: ratings.dat (``::``), u.data (tab)."""
    path, inter = Path(path), Interactions()
    for line in _lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split(sep)
        if len(parts) != fields:
            inter.stats.skip(f"not {fields} fields")
            continue
        inter.add(parts[0].strip(), parts[1].strip(), parts[-1].strip(), tuple(p.strip() for p in parts))
    return _finish(inter, path)


def read_atomic(path: str | Path) -> Interactions:
    """RecBole atomic file: a tab-separated header of ``name:type`` columns, e.g.
    ``user_id:token  item_id:token  rating:float  timestamp:float``."""
    path = Path(path)
    lines = _lines(path)
    header = next(lines, "").rstrip("\n").split("\t")
    names = [h.split(":")[0] for h in header]
    return _read_table(path, names, lines, "\t", "user_id", "item_id", "timestamp")


def read_csv(
    path: str | Path, user: str = "user_id", item: str = "item_id", timestamp: str = "timestamp", sep: str = ","
) -> Interactions:
    """A CSV/TSV file with a header; ``user``/``item``/``timestamp`` name its columns."""
    path = Path(path)
    lines = _lines(path)
    header = next(csv.reader([next(lines, "")], delimiter=sep))
    return _read_table(path, [h.strip() for h in header], lines, sep, user, item, timestamp)


def _read_table(path, names, lines, sep, user, item, timestamp) -> Interactions:
    missing = [c for c in (user, item, timestamp) if c not in names]
    if missing:
        raise ValueError(
            f"{path}: columns {missing} not found in the header {names}; name the columns "
            "(user=, item=, timestamp=) or fix the header"
        )
    iu, ii, it = names.index(user), names.index(item), names.index(timestamp)
    inter = Interactions()
    for row in csv.reader(lines, delimiter=sep):
        if not row:
            continue
        if len(row) != len(names):
            inter.stats.skip("wrong number of fields")
            continue
        inter.add(row[iu].strip(), row[ii].strip(), row[it].strip(), tuple(r.strip() for r in row))
    return _finish(inter, path)


def read_interactions(path: str | Path, **columns) -> Interactions:
    """Pick the reader by file name: ``*.dat`` (MovieLens ``::``), ``u.data``/``*.data`` (tab),
    ``*.inter`` (RecBole), ``*.csv``/``*.tsv`` (header + ``columns``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".dat":
        return read_delimited(path, "::")
    if suffix == ".data":
        return read_delimited(path, "\t")
    if suffix == ".inter":
        return read_atomic(path)
    if suffix in (".csv", ".tsv"):
        return read_csv(path, sep="\t" if suffix == ".tsv" else ",", **columns)
    raise ValueError(f"{path}: unknown interaction format {suffix!r}; use .dat, .data, .inter, .csv or .tsv")

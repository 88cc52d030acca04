"""Readers of interaction logs, each the public format as published:

  * ``movielens``       ML-1m/10m ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``; ML-100k
                        ``u.data`` (tab) by its ``.data`` suffix;
  * ``ml-20m``          ML-20m/25m ``ratings.csv``: header ``userId,movieId,rating,timestamp``;
  * ``amazon-ratings``  Amazon "ratings only" CSV (McAuley's 2014/2018 dumps): headerless
                        ``user,item,rating,timestamp``;
  * ``amazon-reviews``  Amazon reviews, JSON lines with ``reviewerID``, ``asin``, ``overall``,
                        ``unixReviewTime``;
  * ``steam``           Steam reviews as SASRec used them (Kang & McAuley; ``steam_reviews.json``): one
                        Python-literal dict per line with ``username``, ``product_id``, ``date``
                        (``YYYY-MM-DD``, read as seconds since 1970);
  * ``recbole``         RecBole atomic ``.inter``: a tab-separated typed header
                        (``user_id:token  item_id:token  rating:float  timestamp:float``;
                        RecBole's docs, "Atomic Files");
  * ``csv`` / ``tsv``   any table with a header; ``columns`` maps user / item / timestamp / rating to
                        its column names.

Every reader returns ``Interactions`` in file order; bad rows (wrong field count, non-numeric or
non-finite timestamp, empty ids) and exact duplicates of an earlier row are skipped and counted in
``stats``, never fatal. A file with no
usable row, or with missing columns, is a ``ValueError`` naming the file and what to do.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..stats import ReadStats


@dataclass
class Interactions:
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    stats: ReadStats = field(default_factory=lambda: ReadStats(unit="interactions"))
    _rows: set = field(default_factory=set, repr=False)  # every row read, to drop exact duplicates

    min_rating: float | None = None  # rows rated below it are skipped (counted)

    def add(self, user: str, item: str, ts: str, row: tuple | None = None, rating: str | None = None) -> None:
        """One row; ``row`` is the whole raw row (all its fields), the key for exact duplicates."""
        if ts is None or not str(ts).strip():
            self.stats.skip("missing timestamp")
            return
        try:
            t = float(ts)
        except ValueError:
            self.stats.skip("non-numeric timestamp")
            return
        if self.min_rating is not None:
            try:
                if float(rating) < self.min_rating:
                    self.stats.skip(f"rating below {self.min_rating:g}")
                    return
            except (TypeError, ValueError):
                self.stats.skip("missing or non-numeric rating")
                return
        user, item = str(user).strip(), str(item).strip()
        if _negative(user) or _negative(item):
            self.stats.skip("negative user or item id")
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


def _negative(token: str) -> bool:
    try:
        return float(token) < 0
    except ValueError:
        return False


def _lines(path: Path):
    """The file's lines: gzip-compressed files (``.json.gz`` as Amazon ships its reviews) are read through,
    and a byte-order mark (a CSV saved by Excel) is dropped, so the header names what the user sees."""
    if not path.is_file():
        raise FileNotFoundError(f"interaction file {path} does not exist")
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as f:
        try:
            yield from f
        except (OSError, EOFError) as e:  # a truncated or corrupt gzip stream
            raise ValueError(f"{path}: the gzip stream is damaged ({e}); decompress it again or re-download it") from e


def _finish(inter: Interactions, path: Path) -> Interactions:
    inter.stats.files = 1
    inter._rows = set()  # only needed while reading
    if not len(inter):
        raise ValueError(f"{path} holds no usable interaction ({inter.stats}); check the file and its format")
    return inter


def read_delimited(path: str | Path, sep: str, fields: int = 4, min_rating: float | None = None) -> Interactions:
    """``user<sep>item<sep>rating<sep>timestamp`` lines: ratings.dat (``::``), u.data (tab), Amazon
    ratings-only CSV (``,``, no header)."""
    path, inter = Path(path), Interactions(min_rating=min_rating)
    for line in _lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split(sep)
        if len(parts) != fields:
            inter.stats.skip(f"not {fields} fields")
            continue
        inter.add(parts[0].strip(), parts[1].strip(), parts[-1].strip(), tuple(p.strip() for p in parts),
                  parts[2].strip() if fields == 4 else None)
    return _finish(inter, path)


COLUMNS = ("user", "item", "timestamp", "rating")  # the keys of a column mapping


def read_atomic(path: str | Path, columns: dict | None = None, min_rating: float | None = None) -> Interactions:
    """RecBole atomic file: a tab-separated header of ``name:type`` columns, e.g.
    ``user_id:token  item_id:token  rating:float  timestamp:float``."""
    path = Path(path)
    lines = _lines(path)
    header = next(lines, "").rstrip("\n").split("\t")
    names = [h.split(":")[0] for h in header]
    cols = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating", **(columns or {})}
    return _read_table(path, names, lines, "\t", cols, min_rating)


def read_csv(path: str | Path, columns: dict | None = None, sep: str = ",", min_rating: float | None = None,
             **names) -> Interactions:
    """A CSV/TSV file with a header; ``columns`` ({"user": ..., "item": ..., "timestamp": ...,
    "rating": ...}) names its columns (default ``user_id, item_id, timestamp, rating``)."""
    path = Path(path)
    lines = _lines(path)
    header = next(csv.reader([next(lines, "")], delimiter=sep))
    cols = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating",
            **(columns or {}), **names}
    return _read_table(path, [h.strip() for h in header], lines, sep, cols, min_rating)


def _read_table(path, names, lines, sep, cols, min_rating) -> Interactions:
    need = [cols["user"], cols["item"], cols["timestamp"]] + ([cols["rating"]] if min_rating is not None else [])
    missing = [c for c in need if c not in names]
    if missing:
        raise ValueError(
            f"{path}: columns {missing} not found in the header {names}; map them with "
            "data.init_args.columns (user:, item:, timestamp:, rating:) or fix the header"
        )
    iu, ii, it = names.index(cols["user"]), names.index(cols["item"]), names.index(cols["timestamp"])
    ir = names.index(cols["rating"]) if cols["rating"] in names else None
    inter = Interactions(min_rating=min_rating)
    for row in csv.reader(lines, delimiter=sep):
        if not row:
            continue
        if len(row) != len(names):
            inter.stats.skip("wrong number of fields")
            continue
        inter.add(row[iu].strip(), row[ii].strip(), row[it].strip(), tuple(r.strip() for r in row),
                  row[ir].strip() if ir is not None else None)
    return _finish(inter, path)


def _timestamp(value) -> str | None:
    """A JSON value as a numeric timestamp string: numbers as they are, ``YYYY-MM-DD`` dates as
    seconds since 1970 (UTC); anything else None (skipped, counted)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        try:
            return str(float(value))
        except ValueError:
            try:
                return str(datetime.strptime(value.strip(), "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
            except ValueError:
                return None
    return None


def read_json_lines(path: str | Path, columns: dict, min_rating: float | None = None) -> Interactions:
    """One object per line: JSON (Amazon reviews) or a Python-literal dict (Steam); ``columns`` names
    the user / item / timestamp (/ rating) keys. A key no line has is an error naming it."""
    path, inter = Path(path), Interactions(min_rating=min_rating)
    seen_keys: set[str] = set()
    for line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            try:
                obj = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                inter.stats.skip("not a JSON object")
                continue
        if not isinstance(obj, dict):
            inter.stats.skip("not a JSON object")
            continue
        seen_keys.update(obj)
        u, i = obj.get(columns["user"]), obj.get(columns["item"])
        if u is None or i is None:
            inter.stats.skip(f"missing {columns['user']!r} or {columns['item']!r}")
            continue
        ts = _timestamp(obj.get(columns["timestamp"]))
        rating = obj.get(columns.get("rating", "rating"))
        key = (str(u), str(i), ts, str(rating))
        inter.add(str(u), str(i), ts, key, None if rating is None else str(rating))
    if seen_keys:
        need = [columns["user"], columns["item"], columns["timestamp"]]
        need += [columns["rating"]] if min_rating is not None else []
        absent = [c for c in need if c not in seen_keys]
        if absent:
            raise ValueError(f"{path}: no line has the key(s) {absent} (keys seen: {sorted(seen_keys)[:12]}); map them "
                             "with data.init_args.columns (user:, item:, timestamp:, rating:)")
    return _finish(inter, path)


FORMATS = {  # name -> (reader kind, column mapping)
    "movielens": ("dat", {}),
    "ml-20m": ("csv", {"user": "userId", "item": "movieId", "timestamp": "timestamp", "rating": "rating"}),
    "amazon-ratings": ("headerless", {}),
    "amazon-reviews": ("jsonl", {"user": "reviewerID", "item": "asin", "timestamp": "unixReviewTime",
                                 "rating": "overall"}),
    "steam": ("jsonl", {"user": "username", "item": "product_id", "timestamp": "date", "rating": "rating"}),
    "recbole": ("inter", {}),
    "csv": ("csv", {}),
    "tsv": ("tsv", {}),
}


def detect_format(path: Path) -> str:
    """The format of a file from its name and first line (see FORMATS)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":  # ratings.csv.gz, reviews.json.gz: the format is the name's inner suffix
        suffix = Path(path.stem).suffix.lower()
    if suffix in (".dat", ".data"):
        return "movielens"
    if suffix == ".inter":
        return "recbole"
    if suffix in (".json", ".jsonl"):
        first = next((line for line in _lines(path) if line.strip()), "")
        return "amazon-reviews" if "reviewerID" in first else "steam" if "product_id" in first else "jsonl"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".csv":
        first = next(_lines(path), "")
        if "userId" in first and "movieId" in first:
            return "ml-20m"
        fields = first.strip().split(",")
        if len(fields) == 4 and all(_isnumber(f) for f in fields[2:]):  # no header: Amazon ratings-only
            return "amazon-ratings"
        return "csv"
    raise ValueError(f"{path}: unknown interaction format {suffix!r}; use .dat, .data, .inter, .csv, .tsv, .json "
                     f"or .jsonl, or set data.init_args.format to one of {sorted(FORMATS)}")


def _isnumber(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def read_interactions(path: str | Path, format: str = "auto", columns: dict | None = None,
                      min_rating: float | None = None, **names) -> Interactions:
    """Read ``path`` in ``format`` (``auto``: by name and first line; see FORMATS). ``columns``
    ({"user", "item", "timestamp", "rating"} -> column or key names) overrides the format's own;
    ``min_rating`` drops rows rated below it (counted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interaction file {path} does not exist")
    columns = {**(columns or {}), **names}
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise ValueError(f"data.init_args.columns has unknown keys {unknown}; use {list(COLUMNS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "jsonl":
        kind, cols = "jsonl", {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}
    elif fmt in FORMATS:
        kind, cols = FORMATS[fmt]
    else:
        raise ValueError(f"data.init_args.format {format!r} is not one of auto, {', '.join(sorted(FORMATS))}")
    cols = {**cols, **columns}
    if kind == "dat":
        return read_delimited(path, "\t" if path.suffix.lower() == ".data" else "::", min_rating=min_rating)
    if kind == "headerless":
        return read_delimited(path, ",", min_rating=min_rating)
    if kind == "inter":
        return read_atomic(path, cols, min_rating)
    if kind == "jsonl":
        return read_json_lines(path, {"rating": "rating", **cols}, min_rating)
    return read_csv(path, cols, "\t" if kind == "tsv" else ",", min_rating)

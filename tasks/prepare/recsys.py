"""``tessera prepare ml100k``: real MovieLens-100k into the cache (what the recsys configs read).

The interactions come from the recbole 1.2.1 wheel on PyPI (its bundled ``ml-100k.inter``), copied
once to ``$TESSERA_CACHE/recsys/ml-100k/ml-100k.inter`` (atomic). ``SequenceDataModule.prepare_data``
does the same on first use, so this job is only needed to fetch ahead of time (an offline machine,
many processes) or to see the data's statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..jobs import job


@job("prepare", "ml100k", help="real MovieLens-100k (from the recbole 1.2.1 wheel) into the cache, with its statistics",
     example="tessera prepare ml100k")
def prepare_ml100k(args: argparse.Namespace) -> int:
    """Copy ML-100k's interactions into the cache (nothing is downloaded when they are there) and
    print what the leave-one-out split holds: users, items, interactions, skipped rows."""
    from modalities.recsys import build_sequences, read_interactions

    from ..data.fetch import default_cache_dir
    from ..data.recsys import fetch_ml100k

    cache = Path(args.cache).expanduser() if args.cache else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise NotADirectoryError(f"--cache {cache} is a file; give a folder (default: $TESSERA_CACHE)")
    path = fetch_ml100k(cache)
    data = build_sequences(read_interactions(path), args.min_interactions)
    print(f"wrote {path}")
    print(json.dumps(data.stats))
    return 0


@prepare_ml100k.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None, help="cache folder (default: $TESSERA_CACHE or ~/.cache/tessera)")
    p.add_argument("--min-interactions", type=int, default=5, help="users with fewer are dropped (paper: 5)")

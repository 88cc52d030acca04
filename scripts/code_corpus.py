"""Build the code corpus manifest: stdlib + permissively licensed site-packages, deduplicated by
normalised token hash, split by package. Writes manifest.jsonl and stats.json; prints the stats.

    python scripts/code_corpus.py                       # whole corpus -> $TESSERA_CACHE/code/corpus
    python scripts/code_corpus.py --stdlib-only --out /tmp/corpus

The manifest lists paths on this machine (the code itself is never copied or committed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modalities.code.corpus import CorpusStats, build_corpus, discover
from tasks.data.fetch import default_cache_dir


def write_corpus(out: Path, site_packages: bool = True, max_files: int | None = None, workers: int = 1,
                 seed: int = 0, progress: bool = True) -> dict:
    stats = CorpusStats()
    files = discover(stats, site_packages=site_packages)
    if max_files is not None:
        files = files[::max(1, len(files) // max_files)][:max_files]  # an even sample across packages
    rows, summary = build_corpus(files, stats, seed=seed, workers=workers, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "manifest.jsonl.tmp"
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(out / "manifest.jsonl")
    summary["seed"] = seed
    summary["site_packages"] = site_packages
    (out / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=default_cache_dir() / "code" / "corpus")
    p.add_argument("--stdlib-only", action="store_true", help="leave site-packages out")
    p.add_argument("--max-files", type=int, default=None, help="an even sample of this many files")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    summary = write_corpus(a.out, not a.stdlib_only, a.max_files, a.workers, a.seed)
    print(json.dumps(summary, indent=2))
    print(f"wrote {a.out / 'manifest.jsonl'} and {a.out / 'stats.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

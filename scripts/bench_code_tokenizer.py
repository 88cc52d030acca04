"""Code tokenizer throughput over the whole standard library: MB/s and files/s, one core.

    python scripts/bench_code_tokenizer.py [--tokenizer DIR] [--reps 3]

Reads every stdlib .py file into memory first (I/O excluded), then times, per repetition,
(a) Python's tokenize alone (the floor any tokenize-based lexer pays), (b) our lexer, and
(c) lexer + subwords (the full CodeTokenizer), alternating, and reports medians. The HF side is
pinned to one thread (RAYON_NUM_THREADS=1) so the figure is per core. Writes JSON to --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers loads: per-core figures
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tokenize  # noqa: E402
from pathlib import Path  # noqa: E402

from modalities.code import CodeTokenizer, lex, load_code_tokenizer  # noqa: E402
from modalities.code.corpus import stdlib_files  # noqa: E402


def python_tokenize(data: bytes) -> int:
    n = 0
    try:
        for _ in tokenize.tokenize(io.BytesIO(data).readline):
            n += 1
    except (tokenize.TokenError, SyntaxError):
        pass
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", type=Path, default=None, help="a code tokenizer; default: train one (4096) on 200 files")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("runs/bench/code_tokenizer.json"))
    a = p.parse_args(argv)
    files = [Path(f.path) for f in stdlib_files()]
    data = [f.read_bytes() for f in files]
    mb = sum(map(len, data)) / 1e6
    tok = load_code_tokenizer(a.tokenizer) if a.tokenizer else CodeTokenizer.train(
        (d.decode("utf-8", "replace") for d in data[::9][:200]), 4096)
    runs = {"python_tokenize": [], "lexer": [], "lexer+subwords": []}
    subwords = 0
    for _ in range(a.reps):
        for name in runs:  # alternate within each repetition
            t0 = time.perf_counter()
            if name == "python_tokenize":
                for d in data:
                    python_tokenize(d)
            elif name == "lexer":
                for d in data:
                    lex(d)
            else:
                subwords = 0
                for k in range(0, len(data), 64):  # batches of 64 files through the subword step
                    subwords += sum(len(e) for e in tok.encode_batch(data[k : k + 64]))
            runs[name].append(time.perf_counter() - t0)
    result = {
        "files": len(data), "megabytes": round(mb, 2), "subwords": subwords, "reps": a.reps,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "note": "median wall time per pass, one core; the machine may be shared (see README)",
    }
    for name, times in runs.items():
        t = statistics.median(times)
        result[name] = {"seconds": round(t, 2), "MB_per_s": round(mb / t, 2), "files_per_s": round(len(data) / t, 1)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

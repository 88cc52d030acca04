"""Generate the CuBERT benchmark tasks from the corpus splits (scripts/code_corpus.py first).

    python scripts/code_benchmark.py                                  # all tasks, default cache
    python scripts/code_benchmark.py --corpus DIR --out DIR --tasks variable_misuse --max-functions 2000
    python scripts/code_benchmark.py --corpus DIR --out DIR --tasks variable_misuse --paired   # clean + buggy per function
    python scripts/code_benchmark.py --corpus STDLIB --extra-train FULL --out DIR   # more training functions

``--extra-train CORPUS`` adds the functions of a second corpus (e.g. the full stdlib + site-packages
corpus, whose package split differs from ``--corpus``'s) to the training split only: its files that
are in ``--corpus`` (same path or same normalised-token hash) are left out, and so is every function
that is also in ``--corpus``'s valid or test split (same ``ast``, formatting and comments aside), so
the valid and test examples are exactly those written without it and a model pretrained on
``--corpus``'s training split never saw them.

Writes <out>/<task>/{train,valid,test}.jsonl and <out>/stats.json; prints the statistics.
Deterministic for a seed; splits inherit the corpus's package split.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

from modalities.code.benchmark import (
    TASKS,
    Function,
    exception_vocabulary,
    function_key,
    functions_of,
    generate,
)
from modalities.code.corpus import SPLITS
from tasks.data.fetch import default_cache_dir


def _manifest(corpus: Path) -> list[dict]:
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing; run scripts/code_corpus.py --out {corpus} first")
    return [json.loads(line) for line in manifest.open()]


def extra_training_functions(extra: Path, rows: list[dict], functions: dict[str, list[Function]],
                             max_chars: int = 2000, progress: bool = True) -> tuple[list[Function], dict]:
    """The functions of corpus ``extra`` that may join the training split of the corpus whose
    manifest ``rows`` gave ``functions``: none of its files, none of its valid / test functions,
    no function twice."""
    seen_paths, seen_hashes = {r["path"] for r in rows}, {r["hash"] for r in rows}
    extra_rows = [r for r in _manifest(extra) if r["path"] not in seen_paths and r["hash"] not in seen_hashes]
    held_out = {function_key(f) for split in ("valid", "test") for f in functions[split]}
    seen = held_out | {function_key(f) for f in functions["train"]}
    kept, dropped = [], Counter()
    for fn in functions_of(extra_rows, max_chars=max_chars, progress="functions (extra train)" if progress else None):
        key = function_key(fn)
        if key in seen:
            dropped["in valid / test" if key in held_out else "duplicate"] += 1
            continue
        seen.add(key)
        kept.append(fn)
    info = {"corpus": str(extra), "files": len(extra_rows), "packages": len({r["package"] for r in extra_rows}),
            "functions": len(kept), "dropped": dict(dropped)}
    return kept, info


def write_benchmark(corpus: Path, out: Path, tasks=TASKS, seed: int = 0, max_functions: int | None = None,
                    max_chars: int = 2000, paired: bool = False, extra_train: Path | None = None,
                    progress: bool = True) -> dict:
    rows = _manifest(corpus)
    functions = {}
    for split in SPLITS:
        fns = functions_of([r for r in rows if r["split"] == split], max_chars=max_chars, progress=f"functions ({split})" if progress else None)
        if max_functions is not None and len(fns) > max_functions:
            keep = sorted(random.Random(f"{seed}:{split}").sample(range(len(fns)), max_functions))
            fns = [fns[i] for i in keep]  # a seeded sample, in manifest order
        functions[split] = fns
    exceptions = exception_vocabulary(functions["train"], 20)  # before extra_train: the same 20 classes with or without it
    extra = None
    if extra_train is not None:
        fns, extra = extra_training_functions(extra_train, rows, functions, max_chars, progress)
        functions["train"] = functions["train"] + fns
    stats = {"seed": seed, "paired": paired, "functions": {s: len(f) for s, f in functions.items()}, "exception_types": exceptions,
             **({"extra_train": extra} if extra else {}), "tasks": {}}
    for task in tasks:
        (out / task).mkdir(parents=True, exist_ok=True)
        stats["tasks"][task] = {}
        for split in SPLITS:
            rejected = Counter()
            examples = generate(task, functions[split], seed, exceptions, split, rejected, paired)
            with (out / task / f"{split}.jsonl").open("w") as f:
                for ex in examples:
                    f.write(json.dumps(ex) + "\n")
            labels = Counter(ex["label_name"] for ex in examples)
            stats["tasks"][task][split] = {
                "examples": len(examples), "packages": len({ex["package"] for ex in examples}),
                "labels": dict(labels.most_common()), **({"rejected": dict(rejected)} if rejected else {}),
            }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    cache = default_cache_dir() / "code"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=cache / "corpus")
    p.add_argument("--out", type=Path, default=cache / "benchmark")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-functions", type=int, default=None, help="per split, a seeded sample")
    p.add_argument("--max-chars", type=int, default=2000, help="longest function kept (characters)")
    p.add_argument("--paired", action="store_true",
                   help="bug tasks: each function gives its clean AND its buggy example (default: one of the two)")
    p.add_argument("--extra-train", type=Path, default=None, metavar="CORPUS",
                   help="a second corpus whose functions join the training split only (see above)")
    a = p.parse_args(argv)
    stats = write_benchmark(a.corpus, a.out, a.tasks, a.seed, a.max_functions, a.max_chars, a.paired, a.extra_train)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

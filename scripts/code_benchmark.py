"""Generate the CuBERT benchmark tasks from the corpus splits (scripts/code_corpus.py first).

    python scripts/code_benchmark.py                                  # all tasks, default cache
    python scripts/code_benchmark.py --corpus DIR --out DIR --tasks variable_misuse --max-functions 2000
    python scripts/code_benchmark.py --corpus DIR --out DIR --tasks variable_misuse --paired   # clean + buggy per function

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

from modalities.code.benchmark import TASKS, exception_vocabulary, functions_of, generate
from modalities.code.corpus import SPLITS
from tasks.data.fetch import default_cache_dir


def write_benchmark(corpus: Path, out: Path, tasks=TASKS, seed: int = 0, max_functions: int | None = None,
                    max_chars: int = 2000, paired: bool = False) -> dict:
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing; run scripts/code_corpus.py first")
    rows = [json.loads(line) for line in manifest.open()]
    functions = {}
    for split in SPLITS:
        fns = functions_of((r for r in rows if r["split"] == split), max_chars=max_chars)
        if max_functions is not None and len(fns) > max_functions:
            keep = sorted(random.Random(f"{seed}:{split}").sample(range(len(fns)), max_functions))
            fns = [fns[i] for i in keep]  # a seeded sample, in manifest order
        functions[split] = fns
    exceptions = exception_vocabulary(functions["train"], 20)
    stats = {"seed": seed, "paired": paired, "functions": {s: len(f) for s, f in functions.items()}, "exception_types": exceptions, "tasks": {}}
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
    a = p.parse_args(argv)
    stats = write_benchmark(a.corpus, a.out, a.tasks, a.seed, a.max_functions, a.max_chars, a.paired)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

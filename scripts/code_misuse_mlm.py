"""Variable Misuse from the pretrained masked LM's own head (no fine-tuning): classification,
localisation and repair on the CuBERT benchmark's valid and test splits.

Every use of a local variable is masked in turn and the MLM head scores the variable written there
against the function's other local variables (``tasks.code_misuse``). Both statistics of the margins
(minus the lowest, and the log posterior odds of a bug) get their threshold on the valid split; the one
with the better valid accuracy is the headline, and both are reported. The examples are those fine-tuning sees
(``tasks.data.code.featurise``: edit sites beyond ``--max-length`` dropped), so the figures sit in
the same table as scripts/code_eval.py's.

    python scripts/code_misuse_mlm.py --benchmark ~/.cache/tessera/code/benchmark-stdlib-sites \
        --tokenizer TOK --config configs/code/mlm_small.yaml --pretrained CKPT --out runs/code/misuse-mlm

``--paired DIR`` (a benchmark written with ``--paired``) adds, over clean / buggy twins of the same
functions, how the bug moves each statistic and the margin at its own use (``site_effect``).

Writes OUT/results.json and OUT/margins.png (the chosen statistic on the test functions, clean and
buggy, and its threshold).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from modalities.code import load_code_tokenizer
from tasks.code_misuse import (
    STATISTICS,
    MisuseScorer,
    best_threshold,
    load_mlm,
    misuse_metrics,
    site_effect,
)
from tasks.data.code import featurise, read_split

TASKS = ("variable_misuse", "variable_misuse_repair")


def examples(benchmark: Path, task: str, split: str, tok, max_length: int, max_examples: int | None,
             seed: int = 0) -> tuple[list[dict], int]:
    """The split's examples that fine-tuning keeps (sampled first, as CodeTaskDataModule does), and
    how many were dropped because their edit site lies beyond ``max_length``."""
    rows = read_split(benchmark, task, split, max_examples, seed)
    kept = [r for r in rows if featurise(r, task, tok, max_length) is not None]
    return kept, len(rows) - len(kept)


def paired(benchmark: Path, scorer: MisuseScorer, tok, max_length: int, max_pairs: int, progress: bool) -> dict:
    """``site_effect`` on the test split of a ``--paired`` benchmark's variable_misuse_repair task:
    the first ``max_pairs`` pairs whose bug lies inside ``max_length`` tokens."""
    twins: dict[tuple, dict] = {}
    for r in read_split(benchmark, "variable_misuse_repair", "test"):
        twins.setdefault((r["path"], r["function"], r["line"], r["site"][0]), {})[r["label"]] = r
    pairs = [(t[0], t[1]) for t in twins.values() if set(t) == {0, 1}
             and featurise(t[1], "variable_misuse_repair", tok, max_length) is not None][:max_pairs]
    if not pairs:
        raise ValueError(f"{benchmark} holds no clean / buggy pairs of variable_misuse_repair; was it written with --paired?")
    clean = scorer.score([c["source"] for c, _ in pairs], progress=progress)
    buggy = scorer.score([b["source"] for _, b in pairs], progress=progress)
    return site_effect(clean, buggy, [b["error_span"][0] for _, b in pairs])


def run(benchmark: Path, tokenizer: Path, config: Path, pretrained: Path, out: Path, tasks=TASKS,
        max_length: int = 256, max_examples: int | None = None, batch_size: int = 64, precision: str = "bf16",
        progress: bool = True, paired_benchmark: Path | None = None, max_pairs: int = 400) -> dict:
    tok = load_code_tokenizer(tokenizer)
    scorer = MisuseScorer.from_system(load_mlm(config, pretrained), tok, max_length=max_length,
                                      batch_size=batch_size, precision=precision)
    results = {"settings": {"benchmark": str(benchmark), "tokenizer": str(tokenizer), "config": str(config),
                            "pretrained": str(pretrained), "max_length": max_length, "max_examples": max_examples,
                            "precision": precision, "threads": torch.get_num_threads()},
               "tasks": {}, "margins": {}}
    for task in tasks:
        by_stat = {k: {} for k in STATISTICS}
        thresholds, values = {}, {}
        for split in ("valid", "test"):  # valid first: it chooses the thresholds and the statistic
            exs, dropped = examples(benchmark, task, split, tok, max_length, max_examples)
            labels = [e["label"] for e in exs]
            t0 = time.perf_counter()
            scores = scorer.score([e["source"] for e in exs], progress=progress)
            seconds = time.perf_counter() - t0
            stats = {k: [s.statistic(k) for s in scores] for k in STATISTICS}
            for k in STATISTICS:
                if split == "valid":
                    thresholds[k] = best_threshold(stats[k], labels)
                by_stat[k][split] = {**misuse_metrics(scores, exs, thresholds[k], k), "dropped_site_cut_off": dropped,
                                     "seconds": round(seconds, 1),
                                     "majority": float(max(np.mean(labels), 1 - np.mean(labels)))}
            values[split] = {k: {"clean": [x for x, y in zip(v, labels, strict=True) if not y],
                                 "buggy": [x for x, y in zip(v, labels, strict=True) if y]}
                             for k, v in stats.items()}
        chosen = max(STATISTICS, key=lambda k: (by_stat[k]["valid"]["accuracy"], by_stat[k]["valid"]["auroc"]))
        results["tasks"][task] = {"statistic": chosen, **by_stat[chosen], "by_statistic": by_stat}
        results["margins"][task] = values["test"][chosen]
    if paired_benchmark is not None:
        results["paired"] = paired(paired_benchmark, scorer, tok, max_length, max_pairs, progress)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "margins.png")
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    return results


def _json_safe(x):
    """Infinite margins (functions with no scorable use) and NaNs as null: strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return x


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        m = results["margins"][task]
        finite = [v for k in ("clean", "buggy") for v in m[k] if math.isfinite(v)]
        bins = np.linspace(min(finite, default=-1), max(finite, default=1), 40)
        for k, colour in (("clean", "tab:blue"), ("buggy", "tab:red")):
            ax.hist([v for v in m[k] if math.isfinite(v)], bins=bins, alpha=0.55, color=colour, label=k)
        test = results["tasks"][task]["test"]
        if math.isfinite(test["threshold"]):
            ax.axvline(test["threshold"], color="k", ls="--", label=f"threshold (valid) {test['threshold']:.2f}")
        ax.set_title(f"{task}: test accuracy {test['accuracy']:.3f}, AUROC {test['auroc']:.3f}", fontsize=9)
        ax.set_xlabel({"min_margin": "minus the lowest margin over the function's variable uses (nats / subword)",
                       "log_odds": "log posterior odds of a misuse"}[results["tasks"][task]["statistic"]])
        ax.set_ylabel("functions")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(results: dict) -> None:
    print("| task | statistic | split | examples | accuracy | AUROC | localisation | repair | joint | majority |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for task, row in results["tasks"].items():
        for stat, splits in row["by_statistic"].items():
            for split, r in splits.items():
                extra = " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in ("localization", "repair", "joint"))
                mark = " (chosen)" if stat == row["statistic"] else ""
                print(f"| {task} | {stat}{mark} | {split} | {r['examples']} | {r['accuracy']:.3f} | {r['auroc']:.3f} | "
                      f"{extra} | {r['majority']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", type=Path, required=True, help="folder of scripts/code_benchmark.py")
    p.add_argument("--tokenizer", type=Path, required=True, help="the pretrained encoder's code tokenizer")
    p.add_argument("--config", type=Path, required=True, help="the pretraining YAML (encoder shape)")
    p.add_argument("--pretrained", type=Path, required=True, help="MaskedLMSystem checkpoint (last.ckpt)")
    p.add_argument("--out", type=Path, default=Path("runs/code/misuse-mlm"))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-examples", type=int, default=None, help="per split, a seeded sample (as code_eval.py)")
    p.add_argument("--batch-size", type=int, default=64, help="masked sequences per forward pass")
    p.add_argument("--precision", choices=("bf16", "32"), default="bf16")
    p.add_argument("--paired", type=Path, default=None,
                   help="also a benchmark written with --paired: how the bug moves the scores within pairs")
    p.add_argument("--max-pairs", type=int, default=400)
    a = p.parse_args(argv)
    results = run(a.benchmark.expanduser(), a.tokenizer.expanduser(), a.config, a.pretrained.expanduser(), a.out,
                  a.tasks, a.max_length, a.max_examples, a.batch_size, a.precision,
                  paired_benchmark=a.paired.expanduser() if a.paired else None, max_pairs=a.max_pairs)
    print_table(results)
    if "paired" in results:
        print("within pairs:", json.dumps(results["paired"]))
    print(f"wrote {a.out / 'results.json'} and {a.out / 'margins.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

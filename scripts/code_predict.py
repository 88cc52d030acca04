"""Run a fine-tuned CuBERT bug detector over your Python code and list the most suspicious functions.

    tessera fit --config configs/code/repair_tiny.yaml --model.init_args.pretrained ENCODER_OR_CKPT
    python scripts/code_predict.py --config configs/code/repair_tiny.yaml \
        --ckpt runs/code/repair-tiny/lightning_logs/version_0/checkpoints/last.ckpt --paths mypkg/ --out preds.jsonl

Every function under ``--paths`` is scored (``tasks.code_predict``): the bug probability for the
binary tasks (variable_misuse, wrong_binary_operator, swapped_operands), and for
variable_misuse_repair also the variable occurrence the pointer suspects and the variable it would
put there. Writes one JSON line per function (most suspicious first; skipped ones last, with the
reason) and prints the ``--top`` ones. Unreadable files are skipped with a count. The scores are only
as good as the fine-tuned model: see the README's CuBERT tables before trusting one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from code_embed import collect  # scripts/ is on sys.path when a script here runs
from tqdm.auto import tqdm

from tasks.code_predict import POINTER, load_finetuned, predict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the fine-tuning YAML (system, encoder shape, task, tokenizer)")
    p.add_argument("--ckpt", required=True, help="the fine-tuned checkpoint (.ckpt, read with weights_only=True)")
    p.add_argument("--paths", nargs="+", required=True, help="Python files or folders (searched for *.py)")
    p.add_argument("--out", type=Path, required=True, help="JSON lines, most suspicious first")
    p.add_argument("--max-chars", type=int, default=20000, help="functions longer than this are left out")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top", type=int, default=10)
    a = p.parse_args(argv)
    try:
        system, tok, task, max_length = load_finetuned(a.config, a.ckpt)
        sources, rows, skipped_files = collect(a.paths, "function", a.max_chars)
        functions = [{**r, "source": s} for r, s in zip(rows, sources, strict=True)]
        preds = predict(system, tok, task, functions, max_length, a.batch_size,
                        progress=lambda it: tqdm(it, desc="scoring", unit="batch"))
    except (FileNotFoundError, ValueError) as e:
        print(f"code_predict: error: {e}", file=sys.stderr)
        return 2
    scored = sorted((r for r in preds if "bug_probability" in r), key=lambda r: -r["bug_probability"])
    skipped = [r for r in preds if "skipped" in r]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in scored + skipped))
    reasons = dict(Counter(r["skipped"] for r in skipped))
    print(f"{task}: {len(scored)} functions scored, {len(skipped)} skipped {reasons}, files skipped: "
          f"{dict(skipped_files)} -> {a.out}")
    for r in scored[: a.top]:
        extra = ""
        if task == POINTER:
            loc = r["location"]
            extra = f"  `{loc['name']}` at line {loc['line']}" + (f" -> `{r['repair']}`?" if r["repair"] else "")
        print(f"  {r['bug_probability']:.3f}  {r['path']}:{r['line']} {r['name']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

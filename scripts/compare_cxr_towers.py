"""LLM2Vec vs BERT text towers at equal compute, on the real OpenI reports.

No pretrained decoder LLM exists on this machine, so the paper's premise (LLM2Vec on a
pretrained 1B LLM beats BERT-style encoders under report-style variation) is tested by its
equal-compute analogue at tiny size, same splits, tokenizer, seeds and step counts:

- LLM2Vec: a Llama-shaped decoder pretrained with causal LM on the training reports, then
  LLM2Vec's recipe (bidirectional attention + MNTP, unsupervised SimCSE, supervised contrastive);
- BERT: the shared backbone of the same size (same block layout: pre-LN, RoPE, SwiGLU), masked
  LM for as many steps as causal LM + MNTP together, then the same SimCSE and supervised steps;
- both pretrained towers given the supervised step straight after pretraining (no SimCSE), from
  the same pretraining exports: for BERT the brief's "MLM then the same supervised step", for
  LLM2Vec the paper's own supervised recipe (its released "-mntp-supervised" models skip SimCSE);
- references: both towers trained with the supervised step only (from scratch), the real
  pretrained all-MiniLM-L6-v2 zero-shot and after the same supervised step, and TF-IDF.

Evaluation: findings <-> impression retrieval on the held-out test reports in four styles
(``tasks.cxr_eval``). Writes compare.json (every seed, every stage's validation figures and
seconds, and head-to-head win counts of the matched pairs in ``PAIRS``) and retrieval.json /
retrieval.png (the mean over seeds).

    OMP_NUM_THREADS=1 python scripts/compare_cxr_towers.py --out runs/cxr/compare
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tasks.cxr_eval import (
    folder_encoder,
    head_to_head,
    retrieval_table,
    test_pairs,
    tfidf_encoder,
    write_report,
)
from tasks.cxr_pipeline import minilm_folder, run_pipeline
from tasks.data.cxr import load_reports

# The head-to-head counts written into compare.json: (tower a, tower b, what the pairing tests).
PAIRS = (
    ("llm2vec-no-simcse", "bert-no-simcse", "LLM2Vec's supervised recipe (its released '-mntp-supervised' models: "
     "MNTP, then supervised; no SimCSE) vs BERT (MLM, then the same supervised step): same steps"),
    ("llm2vec", "bert", "both with SimCSE before the supervised step: same steps"),
    ("llm2vec", "bert-no-simcse", "LLM2Vec with SimCSE vs BERT without (100 steps more for LLM2Vec)"),
    ("llm2vec-no-simcse", "bert-scratch", "LLM2Vec's supervised recipe vs the BERT tower with the supervised step only"),
    ("llm2vec", "bert-scratch", "LLM2Vec with SimCSE vs the BERT tower with the supervised step only"),
)


def final_metrics(log: Path) -> dict:
    f = log / "metrics.json"
    return json.loads(f.read_text()).get("final", {}) if f.is_file() else {}


def mean_table(tables: list[dict]) -> dict:
    """Per-seed tables {name: {style: {dir: {metric: v}}}} -> the mean (and std over seeds)."""
    out: dict = {}
    for name in tables[0]:
        out[name] = {}
        for style, dirs in tables[0][name].items():
            out[name][style] = {}
            for d, metrics in dirs.items():
                cell = {}
                for k, v in metrics.items():
                    vals = [t[name][style][d][k] for t in tables if name in t]
                    if isinstance(v, (int, float)):
                        cell[k] = statistics.fmean(vals)
                        if k.startswith("recall") and len(vals) > 1:
                            cell[k + "_std"] = statistics.stdev(vals)
                out[name][style][d] = cell
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clm-steps", type=int, default=500, help="causal-LM pretraining of the decoder")
    p.add_argument("--mntp-steps", type=int, default=500, help="LLM2Vec MNTP (the BERT tower's MLM gets clm + mntp)")
    p.add_argument("--simcse-steps", type=int, default=100)
    p.add_argument("--supervised-steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--no-scratch", action="store_true", help="skip the supervised-only rows")
    p.add_argument("--minilm", default="supervised", choices=("supervised", "zero-shot", "none"),
                   help="all-MiniLM-L6-v2 rows: zero-shot and fine-tuned, zero-shot only, or none")
    p.add_argument("--no-ablation", action="store_true", help="skip the pretrained-then-supervised rows (no SimCSE)")
    p.add_argument("--reuse", action="store_true", help="keep stages already finished under --out (resume)")
    p.add_argument("--out", default="runs/cxr/compare")
    a = p.parse_args(argv)
    out = Path(a.out)
    sup = a.supervised_steps
    plans = {  # row name -> (pipeline, steps per stage, the row and stage whose tower it starts from)
        "llm2vec": ("llm2vec", {"clm": a.clm_steps, "mntp": a.mntp_steps, "simcse": a.simcse_steps, "supervised": sup}),
        "bert": ("bert", {"mlm": a.clm_steps + a.mntp_steps, "simcse": a.simcse_steps, "supervised": sup}),
    }
    if not a.no_ablation:
        plans["llm2vec-no-simcse"] = ("llm2vec", {"supervised": sup}, ("llm2vec", "mntp"))
        plans["bert-no-simcse"] = ("bert", {"supervised": sup}, ("bert", "mlm"))
    if not a.no_scratch:
        plans["llm2vec-scratch"] = ("llm2vec", {"supervised": sup})
        plans["bert-scratch"] = ("bert", {"supervised": sup})
    if a.minilm == "supervised":
        plans["minilm"] = ("minilm", {"supervised": sup})

    reports, read = load_reports()
    pairs = test_pairs(reports)
    tfidf = tfidf_encoder(reports)
    runs: dict = {}
    tables = []
    for seed in a.seeds:
        encoders = {"tfidf": tfidf}
        if a.minilm != "none":
            encoders["minilm-zero-shot"] = folder_encoder(minilm_folder())
        runs[seed] = {}
        for row, (pipeline, steps, *start) in plans.items():
            t = time.time()
            init = runs[seed][start[0][0]]["stages"][start[0][1]]["log"] + "/encoder" if start else None
            logs = run_pipeline(pipeline, out / f"seed{seed}" / row, steps, seed, init_from=init and Path(init),
                                reuse=a.reuse)
            runs[seed][row] = {"steps": steps, "seconds": round(time.time() - t, 1), "starts_from": init,
                               "stages": {s: {"log": str(log), "final": final_metrics(log)} for s, log in logs.items()}}
            last = list(logs.values())[-1]
            encoders[row] = folder_encoder(last / "encoder")
            if "simcse" in logs:  # the unsupervised recipe alone, before the supervised step
                encoders[f"{row}-simcse"] = folder_encoder(logs["simcse"] / "encoder")
        tables.append(retrieval_table(encoders, pairs))
        done = a.seeds[: len(tables)]  # written after every seed: a cut-short run keeps what it finished
        table = mean_table(tables)
        meta = {"data": read, "split": "test", "pairs": len(pairs), "seeds": done, "mean_over_seeds": True,
                "steps": {k: v[1] for k, v in plans.items()}}
        write_report(table, out, meta)
        per_seed = dict(zip(done, tables, strict=True))
        versus = {f"{a} vs {b}": {"what": what, **head_to_head(per_seed, a, b)}
                  for a, b, what in PAIRS if a in tables[0] and b in tables[0]}
        result = {**meta, "runs": runs, "per_seed": per_seed, "mean": table, "head_to_head": versus}
        (out / "compare.json").write_text(json.dumps(result, indent=1))
    print_summary(table, runs, versus)
    print(f"wrote {out / 'compare.json'}, {out / 'retrieval.json'} and {out / 'retrieval.png'}")
    return result


def print_summary(table: dict, runs: dict, versus: dict) -> None:
    print(f"{'tower':<22}{'style':<22}{'f2i R@1':>8}{'R@10':>7}{'i2f R@1':>9}{'R@10':>7}")
    for name, rows in table.items():
        for style in ("original", "abbreviated_and_reworded"):
            if style not in rows:
                continue
            f, i = rows[style]["f2i"], rows[style]["i2f"]
            print(f"{name:<22}{style:<22}{f['recall@1']:>8.3f}{f['recall@10']:>7.3f}{i['recall@1']:>9.3f}{i['recall@10']:>7.3f}")
    for seed, rows in runs.items():
        for row, r in rows.items():
            pre = {s: {k: round(v, 3) for k, v in m["final"].items() if k in ("val/loss", "val/accuracy", "val/recall@1")}
                   for s, m in r["stages"].items()}
            print(f"seed {seed} {row}: {r['seconds']} s, validation at the end of each stage: {pre}")
    print("head to head (wins / losses / ties over seeds x styles; styled = the three restyled query sets):")
    for pair, v in versus.items():
        cells = [f"{key} {d} R@{m[7:]} {c['wins']}/{c['losses']}/{c['ties']}"
                 for key in ("all", "styled") for d in ("f2i", "i2f") for m, c in v[key][d].items()]
        print(f"  {pair}: " + ", ".join(cells))


if __name__ == "__main__":
    main()

"""Demo part: CXR report towers on the real OpenI reports, LLM2Vec vs BERT at equal compute.

A tiny Llama-shaped decoder pretrained with causal LM on the training reports (the stand-in for
a pretrained LLM), then LLM2Vec's steps: bidirectional attention + MNTP, unsupervised SimCSE,
supervised contrastive on (findings, impression) pairs. Next to it a BERT tower of the same size
on the shared backbone: masked LM for as many steps as causal LM + MNTP + SimCSE, then the same
supervised step. Same training reports, tokenizer and seed. (After SimCSE the tiny BERT tower's
supervised step sits in the collapsed solution, all reports one vector, for most of its steps:
scripts/compare_cxr_towers.py shows that row and the others.) Then findings <-> impression
retrieval on the held-out test reports in four styles, next to TF-IDF. All through `tessera fit` and the configs in configs/cxr/
(``tasks.cxr_pipeline``). The full-size comparison is scripts/compare_cxr_towers.py.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cxr_part(out: Path, pretrain_steps: int = 500, simcse_steps: int = 30, supervised_steps: int = 100) -> dict:
    """``pretrain_steps``: causal LM + MNTP (half each) for the decoder, MLM for the BERT tower.
    Below ~300 steps the BERT tower's MLM is still on the unigram plateau (validation accuracy =
    the most frequent token's share) and its supervised step collapses: keep it at 500."""
    from tasks.cxr_pipeline import run_pipeline
    from tasks.data.cxr import load_reports
    from tasks.eval.cxr import (
        folder_encoder,
        retrieval_table,
        test_pairs,
        tfidf_encoder,
        write_report,
    )

    out = out / "cxr"
    t0 = time.time()
    plans = {
        "llm2vec": {"clm": pretrain_steps // 2, "mntp": pretrain_steps - pretrain_steps // 2,
                    "simcse": simcse_steps, "supervised": supervised_steps},
        "bert": {"mlm": pretrain_steps + simcse_steps, "supervised": supervised_steps},
    }
    logs, seconds = {}, {}
    for name, steps in plans.items():
        t = time.time()
        stages = run_pipeline(name, out, steps)
        logs[name] = stages["supervised"]
        seconds[name] = round(time.time() - t, 1)
    reports, read = load_reports()
    pairs = test_pairs(reports)
    encoders = {"tfidf": tfidf_encoder(reports)}
    encoders.update({name: folder_encoder(log / "encoder") for name, log in logs.items()})
    table = retrieval_table(encoders, pairs)
    result = write_report(table, out / "retrieval", {"data": read, "split": "test", "pairs": len(pairs),
                                                     "towers": {k: str(v / "encoder") for k, v in logs.items()}})
    return {"job": "CXR report towers: LLM2Vec (causal LM, MNTP, SimCSE, supervised) vs BERT (MLM, supervised), "
                   "OpenI reports",
            "steps": plans, "train_seconds": seconds,
            "wall_seconds": round(time.time() - t0, 1), "test_pairs": len(pairs),
            "gallery": {d: table["tfidf"]["original"][d]["gallery"] for d in ("f2i", "i2f")},
            "results": result["results"], "json": str(out / "retrieval" / "retrieval.json"),
            "plot": str(out / "retrieval" / "retrieval.png")}


def print_cxr(r: dict) -> None:
    print(f"CXR report towers on {r['test_pairs']} held-out OpenI reports (galleries: {r['gallery']['f2i']} "
          f"unique impressions, {r['gallery']['i2f']} unique findings), {r['wall_seconds']} s")
    print("  Recall@1 / Recall@10; f2i: findings -> impression, i2f: impression -> findings")
    print(f"  {'style':<25}{'dir':<4}" + "".join(f"{n:>14}" for n in r["results"]))
    for style in next(iter(r["results"].values())):
        for d in ("f2i", "i2f"):
            cells = "".join(f"{v[style][d]['recall@1']:>8.3f}/{v[style][d]['recall@10']:.3f}" for v in r["results"].values())
            print(f"  {style:<25}{d:<4}{cells}")
    print(f"  json: {r['json']}\n  plot: {r['plot']}")


if __name__ == "__main__":
    import json

    res = cxr_part(ROOT / "runs" / "demo")
    print_cxr(res)
    (ROOT / "runs" / "demo" / "cxr" / "summary.json").write_text(json.dumps(res, indent=1))

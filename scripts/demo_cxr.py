"""Demo part: CXR report towers on the real OpenI reports.

A tiny LLM2Vec tower (Llama-shaped decoder, bidirectional) trained with LLM2Vec's steps (MNTP,
unsupervised SimCSE, then supervised contrastive on the training reports' (findings, impression)
pairs), and a BERT tower of the same size on the shared backbone trained the same way with
masked-LM in place of MNTP, on the same training reports and tokenizer; then findings <->
impression retrieval on the held-out test reports in four styles, next to TF-IDF, after SimCSE
and after the supervised step. All through `tessera fit` and the configs in configs/cxr/.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "cxr"


def _fit(config: str, root: Path, steps: int, init_from: Path | None = None) -> Path:
    from tasks.cli import main as tessera

    args = ["fit", "--config", str(CONFIGS / config), "--trainer.default_root_dir", str(root),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.enable_model_summary", "false"]
    if init_from is not None:
        args += ["--model.init_args.tower.init_args.init_from", str(init_from)]
    tessera(args)
    log = max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return log


def cxr_part(out: Path, pretrain_steps: int = 200, simcse_steps: int = 100, supervised_steps: int = 200) -> dict:
    from modalities.cxr.towers import load_text_tower
    from tasks.cxr_eval import (
        retrieval_table,
        test_pairs,
        tfidf_encoder,
        tokenizer_of,
        tower_encoder,
        write_report,
    )
    from tasks.data.cxr import load_reports

    out = out / "cxr"
    t0 = time.time()
    logs, seconds = {}, {}
    for name, first in (("llm2vec", "llm2vec_mntp_tiny.yaml"), ("bert", "bert_mlm_tiny.yaml")):
        t = time.time()
        pre = _fit(first, out / f"{name}-pretrain", pretrain_steps)
        simcse = _fit(f"{name}_simcse_tiny.yaml", out / f"{name}-simcse", simcse_steps, init_from=pre / "encoder")
        sup = _fit(f"{name}_supervised_tiny.yaml", out / f"{name}-supervised", supervised_steps,
                   init_from=simcse / "encoder")
        logs[f"{name}-simcse"], logs[f"{name}-sup"] = simcse, sup
        seconds[name] = round(time.time() - t, 1)
    reports, read = load_reports()
    pairs = test_pairs(reports)
    encoders = {"tfidf": tfidf_encoder(reports)}
    for name, log in logs.items():
        folder = log / "encoder"
        encoders[name] = tower_encoder(load_text_tower(folder), tokenizer_of(folder))
    table = retrieval_table(encoders, pairs)
    result = write_report(table, out / "retrieval", {"data": read, "split": "test", "pairs": len(pairs),
                                                     "towers": {k: str(v / "encoder") for k, v in logs.items()}})
    return {"job": "CXR report towers: LLM2Vec (MNTP + SimCSE) vs BERT (MLM + SimCSE), OpenI reports",
            "pretrain_steps": pretrain_steps, "simcse_steps": simcse_steps, "supervised_steps": supervised_steps,
            "train_seconds": seconds,
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

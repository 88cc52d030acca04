"""`make demo`, recsys part: a sequential recommender on real MovieLens-100k in about a minute on
2 CPU cores (``--config``, default configs/recsys/sasrec_demo.yaml: SASRec+CE; the former BERT4Rec
recipe is configs/recsys/bert4rec_demo.yaml), then `tessera eval recsys`: the leave-one-out test
under every protocol (full ranking with and without the history, 100 popularity-sampled and 100
uniform negatives), next to MostPopular scored by the same code on the same candidates.

    python scripts/demo_recsys.py --out runs/demo/recsys    # -> runs/demo/recsys/summary.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tasks.cli import main as tessera

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recsys" / "sasrec_demo.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo/recsys"), help="folder for summary.json and the run")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's epochs)")
    p.add_argument("--config", type=Path, default=CONFIG, help="the recsys config to train (default: SASRec's demo)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    extra = ["--trainer.max_steps", str(args.steps)] if args.steps else []
    rc = tessera(["fit", "--config", str(args.config), "--trainer.default_root_dir", str(args.out / "run"), *extra])
    if rc not in (0, None):
        raise SystemExit(f"tessera fit failed ({rc})")
    log = max((args.out / "run" / "lightning_logs").glob("version_*"), key=lambda v: int(v.name.split("_")[1]))
    fit_seconds = time.time() - t0
    if tessera(["eval", "recsys", "--run", str(log), "--out", str(args.out / "eval")]) != 0:
        raise SystemExit("tessera eval recsys failed")
    report = json.loads((args.out / "eval" / "ranking.json").read_text())
    full, sampled = report["protocols"]["full"], report["protocols"]["pop100"]
    model, pop = full["model"]["ndcg@10"], full["mostpop"]["ndcg@10"]
    beats = "beats" if model > pop else "does NOT beat"
    steps = json.loads((log / "encoder" / "config.json").read_text())["meta"].get("step")
    arch = report.get("architecture", "model")
    summary = {
        "part": "recsys",
        "task": "NDCG@10, full ranking (ML-100k leave-one-out test, 943 users)",
        "model": {"name": f"{arch} (2 x 64)", "value": round(model, 4)},
        "baseline": {"name": "MostPopular", "value": round(pop, 4)},
        "higher_is_better": True,
        "seconds": round(time.time() - t0, 1),
        "note": (f"{arch}, {steps} updates ({args.config.name}), {beats} MostPopular; with 100 popularity-sampled "
                 f"negatives NDCG@10 {sampled['model']['ndcg@10']:.3f} vs {sampled['mostpop']['ndcg@10']:.3f}"),
        "ndcg@10": {proto: {who: round(m["ndcg@10"], 4) for who, m in rows.items()}
                    for proto, rows in report["protocols"].items()},
        "fit_seconds": round(fit_seconds, 1),
        "hr@10": {"full": {k: round(v["hr@10"], 4) for k, v in full.items()},
                  "pop100": {k: round(v["hr@10"], 4) for k, v in sampled.items()}},
        "ndcg@10_pop100": {k: round(v["ndcg@10"], 4) for k, v in sampled.items()},
        "encoder": str(log / "encoder"), "ranking": str(args.out / "eval" / "ranking.json"),
        "plot": str(args.out / "eval" / "ranking.png"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"recsys: {arch} NDCG@10 {summary['model']['value']} vs MostPopular {summary['baseline']['value']} "
          f"(full ranking, {summary['seconds']} s); {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()

"""`make demo`: the main job on data that is always here. Each modality adds its part.

Part 1, masked-LM pretraining: a small MosaicBERT-style encoder trained on the Python
standard library's docstrings (`tessera fit --config configs/mlm/demo.yaml`), then the
held-out loss next to a unigram baseline, the loss curve (PNG) and metrics (JSON).
Part 2, BERT4Rec on real MovieLens-100k: a short fit, then the leave-one-out test under
full ranking and 100 popularity-sampled negatives, next to MostPopular.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

from demo_code import code_part, print_code  # noqa: E402  (scripts/ is on sys.path when a script here runs)

from tasks.cli import main as tessera  # noqa: E402  (the package is installed by `make`)
from tasks.data import MaskedTextDataModule  # noqa: E402


def unigram_loss(dm: MaskedTextDataModule) -> float:
    """Cross-entropy of predicting each masked token by its training-set frequency: the floor to beat."""
    counts = torch.bincount(dm.train_set.ids.long(), minlength=dm.tokenizer_vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    total, n = 0.0, 0
    for batch in dm.val_dataloader():
        labels = batch["labels"][batch["labels"] != -100]
        total -= logp[labels].sum().item()
        n += labels.numel()
    return total / n


def mlm_part(out: Path) -> dict:
    config = ROOT / "configs" / "mlm" / "demo.yaml"
    t0 = time.time()
    tessera(["fit", "--config", str(config), "--trainer.default_root_dir", str(out / "mlm")])
    seconds = time.time() - t0
    logs = sorted((out / "mlm" / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    log = logs[-1]
    metrics = json.loads((log / "metrics.json").read_text())
    dm = MaskedTextDataModule(**yaml.safe_load(config.read_text())["data"]["init_args"])  # the run's own data
    dm.prepare_data()
    dm.setup("fit")
    final = metrics["final"]
    result = {
        "job": "masked-LM pretraining, stdlib docstrings",
        "steps": metrics["global_step"],
        "wall_seconds": round(seconds, 1),
        "data": dm.stats,
        "val_loss": round(final["val/loss"], 3),
        "val_perplexity": round(final["val/perplexity"], 1),
        "val_accuracy": round(final["val/accuracy"], 3),
        "unigram_baseline_loss": round(unigram_loss(dm), 3),
        "loss_curve": str(log / "loss_curve.png"),
        "metrics": str(log / "metrics.json"),
    }
    return result


def recsys_part(out: Path, epochs: int = 20) -> dict:
    """BERT4Rec on real ML-100k (paper hyperparameters), short: both protocols next to MostPopular."""
    config = str(ROOT / "configs" / "recsys" / "bert4rec_ml100k.yaml")
    root = out / "bert4rec"
    t0 = time.time()
    args = ["--config", config, "--trainer.default_root_dir", str(root)]
    tessera(["fit", *args, "--trainer.max_epochs", str(epochs), "--trainer.check_val_every_n_epoch", "5"])
    log = max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    best = [c for c in (log / "checkpoints").glob("*.ckpt") if c.name != "last.ckpt"][0]
    tessera(["test", *args, "--ckpt_path", str(best), "--trainer.logger", "false"])
    report = json.loads((root / "test_ranking.json").read_text())  # logger off: written to the root
    return {"job": "BERT4Rec, ML-100k, leave-one-out test", "epochs": epochs, "wall_seconds": round(time.time() - t0, 1),
            "checkpoint": str(best), "report": report}


def print_recsys(r: dict) -> None:
    print(f"BERT4Rec on ML-100k, {r['epochs']} epochs, {r['wall_seconds']} s (test users: 943)")
    print(f"  {'protocol':10} {'model':>30} {'MostPopular':>30}")
    for proto in sorted({k.split('/')[1] for k in r["report"]}):
        m, p = r["report"][f"model/{proto}"], r["report"][f"mostpop/{proto}"]
        cell = lambda d: f"HR@10 {d['hr@10']:.3f} NDCG@10 {d['ndcg@10']:.3f}"  # noqa: E731
        print(f"  {proto:10} {cell(m):>30} {cell(p):>30}")


def main() -> None:
    out = ROOT / "runs" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    from demo_audio import audio_part, print_audio
    from demo_cxr import cxr_part, print_cxr  # scripts/ is on the path when run as a script

    results = {"mlm": mlm_part(out), "bert4rec": recsys_part(out), "code": code_part(out),
               "mert": audio_part(out), "cxr": cxr_part(out)}
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    r = results["mlm"]
    print("\n=== Tessera demo ===")
    print(f"masked-LM on {r['data']['train_documents']} stdlib docstrings ({r['data']['train_tokens']} tokens), "
          f"{r['steps']} steps in {r['wall_seconds']} s")
    print(f"  held-out masked-token loss {r['val_loss']} (perplexity {r['val_perplexity']}, "
          f"accuracy {r['val_accuracy']}) vs unigram baseline {r['unigram_baseline_loss']} "
          f"(perplexity {math.exp(r['unigram_baseline_loss']):.1f})")
    print(f"  loss curve: {r['loss_curve']}\n  metrics:    {r['metrics']}")
    print_recsys(results["bert4rec"])
    print_code(results["code"])
    print_audio(results["mert"])
    print_cxr(results["cxr"])
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()

"""`make demo`, text part: masked-LM pretraining of a small MosaicBERT-style encoder on the Python
standard library's docstrings (configs/text/demo.yaml, ~1.5 minutes on 2 CPU cores), then the
held-out masked-token loss next to the unigram baseline (each masked token predicted by its
training-set frequency: what a model that ignores the context can do).

    python scripts/demo_text.py --out runs/demo/text      # -> runs/demo/text/summary.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import yaml

from tasks.cli import main as tessera
from tasks.data import MaskedTextDataModule

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "text" / "demo.yaml"


def unigram_loss(dm: MaskedTextDataModule) -> float:
    """Cross-entropy of predicting each masked validation token by its training-set frequency."""
    import torch

    counts = torch.bincount(dm.train_set.ids.long(), minlength=dm.tokenizer_vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    total, n = 0.0, 0
    for batch in dm.val_dataloader():
        labels = batch["labels"][batch["labels"] != -100]
        total -= logp[labels].sum().item()
        n += labels.numel()
    return total / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo/text"), help="folder for summary.json and the run")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    extra = ["--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(args.steps)] if args.steps else []
    rc = tessera(["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(args.out / "run"), *extra])
    if rc not in (0, None):
        raise SystemExit(f"tessera fit failed ({rc})")
    log = max((args.out / "run" / "lightning_logs").glob("version_*"), key=lambda v: int(v.name.split("_")[1]))
    metrics = json.loads((log / "metrics.json").read_text())
    dm = MaskedTextDataModule(**yaml.safe_load(CONFIG.read_text())["data"]["init_args"])  # the run's own data
    dm.prepare_data()
    dm.setup("fit")
    final, baseline = metrics["final"], unigram_loss(dm)
    summary = {
        "part": "text",
        "task": "masked-token cross-entropy (held-out stdlib docstrings, 30% masking)",
        "model": {"name": "MosaicBERT-style encoder, 4 x 256", "value": round(final["val/loss"], 3)},
        "baseline": {"name": "unigram (training-set token frequencies)", "value": round(baseline, 3)},
        "higher_is_better": False,
        "seconds": round(time.time() - t0, 1),
        "note": (f"{metrics['global_step']} steps from scratch "
                 f"{'beat' if final['val/loss'] < baseline else 'do NOT beat'} the unigram baseline; perplexity {math.exp(final['val/loss']):.1f} vs "
                 f"{math.exp(baseline):.1f}, masked-token accuracy {final['val/accuracy']:.3f}"),
        "steps": metrics["global_step"], "data": dm.stats, "val_accuracy": round(final["val/accuracy"], 3),
        "encoder": str(log / "encoder"), "loss_curve": str(log / "loss_curve.png"), "metrics": str(log / "metrics.json"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"text: held-out masked-token loss {summary['model']['value']} vs unigram {summary['baseline']['value']} "
          f"({summary['seconds']} s); {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()

"""BERT4Rec side by side: RecBole 1.2.1's own BERT4Rec (its trainer, full ranking) and Tessera's,
on the same ML-100k leave-one-out split, same hyperparameters, same number of epochs, in one run.

RecBole needs old numpy/scipy, so it runs in its own virtual environment (``--recbole-python``),
which ``make bench-recsys`` creates and then runs this script; by hand:
    python3 -m venv .venv-recbole
    .venv-recbole/bin/pip install torch==2.13.0 && .venv-recbole/bin/pip install recbole==1.2.1
    .venv-recbole/bin/pip install numpy==1.23.5 scipy==1.11.4 pandas==2.0.3 'scikit-learn<1.6' 'setuptools>=77.0.3,<81'

    python scripts/bench_recsys.py --epochs 1 [--recbole-python .venv-recbole/bin/python]

Note what an "epoch" is: RecBole trains on every prefix of every history (~97k sequences on
ML-100k); Tessera, like the original BERT4Rec, trains on each user's history once per epoch
(943 sequences) with fresh cloze masks. Equal epochs therefore give RecBole ~100x more updates;
the table also reports wall seconds so budgets can be compared by time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from modalities.recsys import BERT4Rec, BERT4RecConfig
from tasks.data import SequenceDataModule
from tasks.recsys import BERT4RecSystem

# the paper's MovieLens settings, as both sides spell them
HP = dict(layers=2, heads=2, hidden=64, inner=256, dropout=0.2, mask_ratio=0.2, max_len=200, lr=1e-3, batch=256,
          ft_ratio=0.5)  # RecBole BERT4Rec.yaml: half the batches mask only the last item; ours per sequence

RECBOLE_RUNNER = r"""
import json, sys, time
from recbole.quick_start import run_recbole
hp = json.loads(sys.argv[1])
config = {
    "n_layers": hp["layers"], "n_heads": hp["heads"], "hidden_size": hp["hidden"], "inner_size": hp["inner"],
    "hidden_dropout_prob": hp["dropout"], "attn_dropout_prob": hp["dropout"], "mask_ratio": hp["mask_ratio"], "ft_ratio": hp["ft_ratio"],
    "MAX_ITEM_LIST_LENGTH": hp["max_len"], "learning_rate": hp["lr"], "train_batch_size": hp["batch"],
    "epochs": hp["epochs"], "loss_type": "CE", "train_neg_sample_args": None,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit", "MRR"], "topk": [10], "valid_metric": "NDCG@10", "eval_step": hp["epochs"],
    "stopping_step": 10**6, "show_progress": False, "seed": 0, "reproducibility": True, "device": "cpu",
    "use_gpu": False, "checkpoint_dir": "saved",
}
t0 = time.time()
result = run_recbole(model="BERT4Rec", dataset="ml-100k", config_dict=config)
print("RESULT " + json.dumps({"test": dict(result["test_result"]), "seconds": time.time() - t0}))
"""


def run_recbole(python: str, epochs: int) -> dict:
    if not Path(python).is_file():
        raise SystemExit(f"no RecBole python at {python}; create the venv as this script's docstring shows")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # RecBole's own pickled checkpoints
        proc = subprocess.run([python, "-c", RECBOLE_RUNNER, json.dumps({**HP, "epochs": epochs})],
                              capture_output=True, text=True, cwd=tmp, env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "RESULT " not in out:
        raise SystemExit(f"RecBole failed (exit {proc.returncode}):\n{out[-3000:]}")
    res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    epoch_times = [float(t) for t in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", out)]
    return {"ndcg@10": res["test"]["ndcg@10"], "hr@10": res["test"]["hit@10"], "mrr": res["test"].get("mrr@10"),
            "seconds_per_epoch": sum(epoch_times) / max(len(epoch_times), 1), "wall_seconds": res["seconds"]}


class EpochTimer(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._t0)


def run_tessera(epochs: int, batch_size: int, sequences: str, last_item_ratio: float,
                max_seconds: float | None = None, val_every: int | None = None) -> dict:
    """Train and test ours. With ``val_every``, the test uses the best-validation checkpoint."""
    L.seed_everything(0, verbose=False)
    dm = SequenceDataModule(max_length=HP["max_len"], mask_ratio=HP["mask_ratio"], batch_size=batch_size,
                            sequences=sequences, last_item_ratio=last_item_ratio)
    dm.prepare_data()
    dm.setup("fit")
    model = BERT4Rec(BERT4RecConfig(num_items=dm.num_items, max_length=HP["max_len"], hidden_size=HP["hidden"],
                                    num_layers=HP["layers"], num_heads=HP["heads"], intermediate_size=HP["inner"],
                                    dropout=HP["dropout"]))
    system = BERT4RecSystem(model, lr=HP["lr"])
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        best = ModelCheckpoint(dirpath=tmp, monitor="val/ndcg@10", mode="max") if val_every else None
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=bool(val_every),
                            callbacks=[timer] + ([best] if best else []), check_val_every_n_epoch=val_every or 10**6,
                            num_sanity_val_steps=0, default_root_dir=tmp, enable_progress_bar=False,
                            enable_model_summary=False, use_distributed_sampler=False,
                            max_time={"seconds": max_seconds} if max_seconds else None)
        t0 = time.time()
        trainer.fit(system, datamodule=dm)
        trainer.test(system, datamodule=dm, verbose=False, ckpt_path=best.best_model_path if best else None)
        wall = time.time() - t0
        report = json.loads((Path(tmp) / "test_ranking.json").read_text())
    m, pop = report["protocols"]["full"]["model"], report["protocols"]["full"]["mostpop"]
    return {"ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"], "mrr": m["mrr"], "epochs": len(timer.times),
            "updates": trainer.global_step, "seconds_per_epoch": sum(timer.times) / max(len(timer.times), 1),
            "train_seconds": sum(timer.times), "wall_seconds": wall,
            "settings": {"sequences": sequences, "batch_size": batch_size, "last_item_ratio": last_item_ratio},
            "mostpop": {"ndcg@10": pop["ndcg@10"], "hr@10": pop["hr@10"]}, "report": report}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1, help="RecBole's epochs, and ours on the same data")
    p.add_argument("--recbole-python", default=".venv-recbole/bin/python")
    p.add_argument("--budget-fraction", type=float, default=1 / 3,
                   help="our own recipe gets this fraction of RecBole's training seconds")
    p.add_argument("--budget-last-item-ratio", type=float, default=0.2,
                   help="our recipe's last-item sample ratio (the configs' value)")
    p.add_argument("--out", default="runs/bench")
    a = p.parse_args()
    rows = {"recbole": run_recbole(a.recbole_python, a.epochs)}
    # the same data, epochs, batch and fine-tuning ratio as RecBole
    rows["tessera (same data)"] = run_tessera(a.epochs, HP["batch"], "prefixes", HP["ft_ratio"])
    # our own recipe (each history once per epoch, small batches), stopped at a fraction of RecBole's time
    budget = a.budget_fraction * rows["recbole"]["seconds_per_epoch"] * a.epochs
    rows["tessera (1/3 time)"] = run_tessera(10**6, 16, "histories", a.budget_last_item_ratio, max_seconds=budget, val_every=5)
    print(f"ML-100k, BERT4Rec, full ranking over all items, test split (943 users); RecBole {a.epochs} epoch(s)")
    print(f"{'impl':20} {'NDCG@10':>8} {'HR@10':>7} {'epochs':>7} {'updates':>8} {'s/epoch':>9} {'train s':>8}")
    for name, r in rows.items():
        train_s = r.get("train_seconds", r["seconds_per_epoch"] * a.epochs)
        print(f"{name:20} {r['ndcg@10']:8.4f} {r['hr@10']:7.4f} {r.get('epochs', a.epochs):7d} {r.get('updates', -1):8d} "
              f"{r['seconds_per_epoch']:9.1f} {train_s:8.1f}")
    mp = rows["tessera (same data)"]["mostpop"]
    print(f"{'MostPopular':20} {mp['ndcg@10']:8.4f} {mp['hr@10']:7.4f}")
    ratio = rows["tessera (same data)"]["seconds_per_epoch"] / rows["recbole"]["seconds_per_epoch"]
    print(f"epoch time on the same data, tessera / recbole: {ratio:.3f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recsys.json").write_text(json.dumps({"epochs": a.epochs, "hp": HP, **rows, "epoch_time_ratio": ratio}, indent=1))
    print(f"wrote {out / 'recsys.json'}")


if __name__ == "__main__":
    main()

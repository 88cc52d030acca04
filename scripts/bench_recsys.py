"""Four sequential recommenders at equal wall time, every one scored by Tessera's evaluator.

Tessera's BERT4Rec and SASRec, and RecBole 1.2.1's BERT4Rec and SASRec (trained by RecBole's own
``Trainer._train_epoch``, in RecBole's own virtual environment), each train for the same budget of
training wall-clock seconds on ML-100k's leave-one-out split, validating every ``--val-every``
seconds (validation time is not counted in the budget). The best-validation weights of each model
score every test user against every item; those score matrices -- RecBole's dumped by its own
``full_sort_predict`` into ``.npy`` files (never pickle), columns put in Tessera's item order --
go through ``tasks.metrics.ranking.RankingEvaluator`` under every protocol (full, full_history,
pop100, uni100), beside MostPopular.

How RecBole is scored, and checked:
  * Same split: RecBole reads Tessera's sequences from an atomic ``.inter`` file this script writes
    (the data's own ids; timestamp = position in the user's sequence), sorts them by time and holds
    out the last two itself (``LS: valid_and_test``, ``TO``). Fed RecBole's bundled ml-100k.inter
    directly, 37 users' test histories and 4 test targets differ from ours (measured here): the two
    break ties of equal timestamps differently. The
    runner compares every validation and test row with Tessera's split user by user (target item
    and the history's last ``MAX_ITEM_LIST_LENGTH`` items, as tokens); the JSON records the
    mismatches (``split_check``).
  * Same number: RecBole's own ``Trainer.evaluate`` on the test loader (recbole 1.2.1: for
    sequential models ``FullSortEvalDataLoader.collate_fn`` passes ``history_index = None``, so
    ``_full_sort_batch_eval`` masks only the padding item 0) is recorded beside our evaluator's
    ``full_history`` NDCG@10 of the dumped scores; they must agree (``recbole_check``).

Per-epoch cost (``epoch_cost``): every row trains ``--cost-batches`` batches at the same size (2
layers, 2 heads, hidden 64, FFN 256), one thread, with the settings the race ships (Tessera: bf16
autocast); the process CPU time per batch times the batches of an epoch. ``--cost-rounds`` rounds,
one row at a time, Tessera's and RecBole's rows alternating; the median round counts, and every
round's figure and load average is kept. Same sequences: RecBole's training data, every prefix of
every history cut to the last 50 items, batches of 256 (Tessera's SASRec with ``labels: last``:
each prefix's last item is its one target, as RecBole's). Apart, not the same sequences: Tessera's
SASRec on windows of 51 items with the next item at every position (``sequences: windows``: the
same 97,171 training targets in 2,412 sequences, Kang & McAuley's layout).

    make .venv-recbole/.installed
    python scripts/bench_recsys.py --budget 300 --val-every 30 --recbole-python .venv-recbole/bin/python

Writes ``--out`` (results/recsys_bench.json) and the plot beside it (.png: validation NDCG@10 vs
training seconds).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIZE = dict(layers=2, heads=2, hidden=64, inner=256)  # BERT4Rec's paper size, both sides
COST_LENGTH, COST_BATCH = 50, 256  # the per-epoch comparison: RecBole's prefixes, its default length

# Each side's recipe for the race (the JSON records them). Tessera: the configs' recipes
# (bert4rec_demo.yaml: prefixes, 20 items, lr 3e-3 decayed linearly -- here over the time budget;
# SASRec: sasrec_ml100k.yaml's 200 items, full-softmax CE at every position, lr 1e-3 constant, each
# history cut into windows of 201 items (every training target once an epoch); both in bf16 autocast).
# The 45 CPU-second race used sasrec_demo.yaml's 50 items, one random window per history.
# RecBole: its shipped defaults (model yaml, MAX_ITEM_LIST_LENGTH 50, Adam lr 1e-3 constant) with
# batches of 256 (the paper's; its default 2048 gives 48 updates per epoch of 97k prefixes).
RECIPES = {
    "tessera-bert4rec": dict(side="tessera", arch="bert4rec", max_length=20, sequences="prefixes", batch=256,
                             last_item_ratio=0.5, mask_ratio=0.2, lr=3e-3, weight_decay=0.01, warmup=100,
                             decay="linear over the budget", dropout=0.1, precision="bf16-mixed"),
    "tessera-sasrec": dict(side="tessera", arch="sasrec", max_length=200, sequences="windows", batch=128,
                           lr=1e-3, weight_decay=0.0, warmup=0, decay="constant", dropout=0.2,
                           precision="bf16-mixed"),
    "recbole-bert4rec": dict(side="recbole", arch="BERT4Rec", max_length=50, batch=256, lr=1e-3,
                             dropout=0.2, mask_ratio=0.2, ft_ratio=0.5, loss_type="CE"),
    "recbole-sasrec": dict(side="recbole", arch="SASRec", max_length=50, batch=256, lr=1e-3,
                           dropout=0.5, loss_type="CE"),
}
# The per-epoch cost rows: (the recipe whose network and settings train, overrides of its data). Same
# sequences: every row trains on RecBole's 97,171 prefixes (last 50 items, batches of 256); SASRec
# with ``labels: last`` predicts what RecBole's SASRec predicts, each prefix's last item. The
# windows row is the other data layout of the same training targets (Kang & McAuley: each history cut
# into windows of 51 items, the next item at every position; every item after a history's first is a
# target once an epoch), so its epoch is not the same sequences: reported apart.
COST_ROWS = {
    "tessera-bert4rec": ("tessera-bert4rec", dict(sequences="prefixes")),
    "tessera-sasrec": ("tessera-sasrec", dict(sequences="prefixes", labels="last")),
    "tessera-sasrec-windows": ("tessera-sasrec", dict(sequences="windows", labels="all")),
    "recbole-bert4rec": ("recbole-bert4rec", {}),
    "recbole-sasrec": ("recbole-sasrec", {}),
}
RECBOLE_DATASET = "ml-100k-tessera"  # the folder and file name of the .inter written for RecBole
PAIRS = [("tessera-bert4rec", "recbole-bert4rec"), ("tessera-sasrec", "recbole-sasrec")]

# --------------------------------------------------------------------------------------------
# RecBole side: run by RecBole's python (its venv), so it may import only recbole, torch, numpy
# and, by file path, Tessera's torch-only evaluator.
RECBOLE_RUNNER = r"""
import importlib.util, json, math, sys, time, copy
import numpy as np
import torch

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
spec = importlib.util.spec_from_file_location("tessera_ranking", a["ranking_py"])
ranking = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ranking)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

r = a["recipe"]
cfg = {
    "n_layers": a["size"]["layers"], "n_heads": a["size"]["heads"], "hidden_size": a["size"]["hidden"],
    "inner_size": a["size"]["inner"], "hidden_dropout_prob": r["dropout"], "attn_dropout_prob": r["dropout"],
    "MAX_ITEM_LIST_LENGTH": r["max_length"], "learning_rate": r["lr"], "train_batch_size": r["batch"],
    "loss_type": r["loss_type"], "train_neg_sample_args": None, "epochs": 10**6,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10", "metric_decimal_place": 12,
    "show_progress": False, "seed": a["seed"], "reproducibility": True, "device": "cpu", "use_gpu": False,
    "checkpoint_dir": a["workdir"] + "/saved", "state": "WARNING", "eval_batch_size": 256,
}
for k in ("mask_ratio", "ft_ratio"):
    if k in r:
        cfg[k] = r[k]
# Tessera's split, fed through RecBole's own atomic file: each user's interactions in Tessera's
# order, the timestamp being the position (RecBole's float32-normalised ML-100k timestamps tie and
# reorder a few dozen users otherwise); RecBole still builds its own leave-one-out split from it.
cfg.update({"data_path": a["workdir"], "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "normalize_all": False})
config = Config(model=r["arch"], dataset=a["dataset"], config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
torch.set_num_threads(a["threads"])
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

split = json.load(open(a["workdir"] + "/split.json"))
col_of = {tok: j for j, tok in enumerate(split["items"])}  # the data's item id -> Tessera's column
row_of = {tok: u for u, tok in enumerate(split["users"])}
n_rb = dataset.item_num  # RecBole's ids 0 (PAD) .. n_rb - 1
rb_tokens = [dataset.id2token(dataset.iid_field, i) for i in range(1, n_rb)]
cols = torch.tensor([col_of.get(t, -1) for t in rb_tokens])
assert (cols >= 0).all() and len(cols) == len(split["items"]), "RecBole's items are not Tessera's"
seqs = split["sequences"]
L = r["max_length"]


@torch.no_grad()
def score(loader, which, check):
    # (users, items) float32 in Tessera's row and column order, and the split check
    model.eval()
    out = torch.full((len(seqs), len(cols)), float("nan"))
    bad_target = bad_history = seen = 0
    for inter, _, _, _ in loader:
        s = model.full_sort_predict(inter).view(len(inter), -1)[:, 1:n_rb]  # drop PAD (0) and MASK
        users = [row_of[dataset.id2token(dataset.uid_field, int(u))] for u in inter[dataset.uid_field]]
        rows = torch.tensor(users)
        out[rows[:, None], cols[None, :]] = s.float()
        if check:
            for b, u in enumerate(users):
                held = seqs[u][-2] if which == "val" else seqs[u][-1]
                hist = seqs[u][:-2] if which == "val" else seqs[u][:-1]
                n = int(inter["item_length"][b])
                rb_hist = [dataset.id2token(dataset.iid_field, int(i)) for i in inter["item_id_list"][b, :n]]
                ours_hist = [split["items"][i - 1] for i in hist[-L:]]
                bad_target += dataset.id2token(dataset.iid_field, int(inter[dataset.iid_field][b])) != split["items"][held - 1]
                bad_history += rb_hist != ours_hist
                seen += 1
    model.train()
    return out, {"users": seen, "target_mismatch": int(bad_target), "history_mismatch": int(bad_history)}


def evaluate(scores, which):
    ev = ranking.RankingEvaluator(torch.tensor(split["popularity"]), negatives=0, mostpop=False)
    for lo in range(0, len(seqs), 256):
        idx = range(lo, min(lo + 256, len(seqs)))
        if which == "val":
            hist, tgt = [torch.tensor(seqs[u][:-2]) for u in idx], [seqs[u][-2] for u in idx]
        else:
            hist, tgt = [torch.tensor(seqs[u][:-1]) for u in idx], [seqs[u][-1] for u in idx]
        ev.update(scores[lo:lo + len(idx)], hist, torch.tensor(tgt), torch.tensor(list(idx)))
    p = ev.compute()["protocols"]
    return {"full": p["full"]["model"]["ndcg@10"], "full_history": p["full_history"]["model"]["ndcg@10"]}


class Clock:
    # wraps RecBole's train loader for Trainer._train_epoch: yields batches across epochs and ends
    # the call when the next validation is due; counts training seconds (data + step) and CPU time
    def __init__(self, loader):
        self.loader, self.it = loader, None
        self.elapsed = self.cpu = 0.0
        self.steps = 0
        self.sequences = 0
        self.stop_at = 0.0
        self.cost = None  # (warm, batches) in cost mode
        self.cost_cpu = []

    def __iter__(self):
        t, c = time.perf_counter(), time.process_time()
        while True:
            if self.it is None:
                self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                self.it = None
                continue
            yield batch
            now, cnow = time.perf_counter(), time.process_time()
            self.elapsed += now - t
            self.cpu += cnow - c
            if self.cost is not None and self.steps >= self.cost[0]:
                self.cost_cpu.append(cnow - c)
            t, c = now, cnow
            self.steps += 1
            self.sequences += len(batch)
            if self.cost is not None and self.steps >= sum(self.cost):
                return
            if self.cost is None and self.spent() >= self.stop_at:
                return

    def spent(self):
        return self.cpu if a.get("clock") == "cpu" else self.elapsed


clock = Clock(train_data)
out = {"name": a["name"], "recipe": r, "sequences_per_epoch": len(train_data._dataset)}
if a["mode"] == "cost":
    clock.cost = (a["cost_warm"], a["cost_batches"])
    trainer._train_epoch(clock, 0)
    out["cpu_per_batch"] = sum(clock.cost_cpu) / len(clock.cost_cpu)
    out["batches_per_epoch"] = math.ceil(len(train_data._dataset) / r["batch"])
else:
    curve, best, best_state = [], -1.0, None
    _, check_val = score(valid_data, "val", True)
    while True:
        clock.stop_at = min(clock.spent() + a["val_every"], a["budget"])
        trainer._train_epoch(clock, clock.steps)
        v, _ = score(valid_data, "val", False)
        m = evaluate(v, "val")
        curve.append({"seconds": clock.elapsed, "cpu_seconds": clock.cpu, "steps": clock.steps,
                      "epochs": clock.sequences / len(train_data._dataset), "val_ndcg@10": m["full"],
                      "val_ndcg@10_full_history": m["full_history"]})
        print("VAL " + json.dumps(curve[-1]), flush=True)
        if m["full"] > best:
            best, best_state = m["full"], copy.deepcopy(model.state_dict())
        if clock.spent() >= a["budget"]:
            break
    model.load_state_dict(best_state)
    test_scores, check_test = score(test_data, "test", True)
    assert not torch.isnan(test_scores).any(), "a test user got no scores"
    np.save(a["workdir"] + "/" + a["name"] + ".test_scores.npy", test_scores.numpy())
    own = trainer.evaluate(test_data, load_best_model=False)  # RecBole's own number on these weights
    out.update({"curve": curve, "best_val_ndcg@10": best, "train_seconds": clock.elapsed,
                "train_cpu_seconds": clock.cpu, "steps": clock.steps,
                "epochs": clock.sequences / len(train_data._dataset),
                "recbole_test": {k: float(v) for k, v in own.items()},
                "split_check": {"val": check_val, "test": check_test}})
json.dump(out, open(a["workdir"] + "/" + a["name"] + "." + a["mode"] + ".json", "w"), indent=1)
print("DONE", flush=True)
"""


# --------------------------------------------------------------------------------------------
# Tessera side: run in a worker process of this script (``--worker``), one model each.
def _data_module(recipe: dict, max_length: int | None = None, sequences: str | None = None):
    from tasks.data import SequenceDataModule

    dm = SequenceDataModule(max_length=max_length or recipe["max_length"], batch_size=recipe["batch"],
                            objective="cloze" if recipe["arch"] == "bert4rec" else "next",
                            labels=recipe.get("labels", "all"),
                            sequences=sequences or recipe["sequences"], mask_ratio=recipe.get("mask_ratio", 0.2),
                            last_item_ratio=recipe.get("last_item_ratio", 0.0), eval_batch_size=256)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _system(recipe: dict, num_items: int, max_length: int):
    from modalities.recsys import BERT4Rec, BERT4RecConfig, SASRec, SASRecConfig
    from tasks.recsys import BERT4RecSystem, SASRecSystem

    size = dict(num_items=num_items, max_length=max_length, hidden_size=SIZE["hidden"], num_layers=SIZE["layers"],
                num_heads=SIZE["heads"], intermediate_size=SIZE["inner"], dropout=recipe["dropout"],
                attention_backend="unpadded")
    if recipe["arch"] == "bert4rec":
        return BERT4RecSystem(BERT4Rec(BERT4RecConfig(**size)), lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                              warmup=0, schedule="constant")
    return SASRecSystem(SASRec(SASRecConfig(**size)), lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                        warmup=0, schedule="constant")


def tessera_scores(model, loader, n_users: int, num_items: int):
    """(users, items) float32 scores of the model for every user of an evaluation loader."""
    import torch

    out = torch.full((n_users, num_items), float("nan"))
    model.eval()
    with torch.no_grad():
        for batch in loader:
            hidden = model(batch["items"], batch["mask"])
            out[batch["user"]] = model.item_scores(hidden[torch.arange(len(hidden)), batch["last"]]).float()
    model.train()
    return out


def evaluate_scores(scores, histories, targets, popularity, negatives: int = 100, batch: int = 256) -> dict:
    """Every protocol of RankingEvaluator for a (users, items) score matrix (rows: users in split order)."""
    import torch

    from tasks.metrics.ranking import RankingEvaluator

    ev = RankingEvaluator(popularity, negatives=negatives, seed=0)
    scores = torch.as_tensor(scores)
    for lo in range(0, len(targets), batch):
        hi = min(lo + batch, len(targets))
        ev.update(scores[lo:hi], [torch.tensor(h) for h in histories[lo:hi]], torch.tensor(targets[lo:hi]),
                  torch.arange(lo, hi))
    return ev.compute()


def tessera_worker(a: dict) -> None:
    import lightning as L
    import numpy as np
    import torch

    torch.set_num_threads(a["threads"])
    L.seed_everything(a["seed"], verbose=False)
    recipe = a["recipe"]
    cost = a["mode"] == "cost"
    length = COST_LENGTH if cost else recipe["max_length"]
    if cost:
        recipe = {**recipe, "batch": COST_BATCH, **a["cost_data"]}
    dm = _data_module(recipe, length)
    system = _system(recipe, dm.num_items, length)
    n_users = len(dm.data.sequences)
    val_h, val_t = dm.data.split("val")
    out = {"name": a["name"], "recipe": recipe, "sequences_per_epoch": len(dm.train_dataloader().dataset)}

    class Clock(L.Callback):
        def __init__(self):
            self.elapsed = self.cpu = 0.0
            self.steps = self.sequences = 0
            self.next_val = a["val_every"]
            self.curve, self.best, self.best_state, self.cost_cpu = [], -1.0, None, []

        def on_train_start(self, trainer, pl_module):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if recipe.get("decay", "constant") != "constant" and not cost:  # linear warmup, then to 0 at the budget
                warm = min(1.0, (self.steps + 1) / recipe["warmup"]) if recipe["warmup"] else 1.0
                for g in trainer.optimizers[0].param_groups:
                    g["lr"] = recipe["lr"] * warm * max(0.0, 1.0 - self.spent() / a["budget"])

        def spent(self):
            return self.cpu if a.get("clock") == "cpu" else self.elapsed

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now, cnow = time.perf_counter(), time.process_time()
            self.elapsed += now - self.t
            self.cpu += cnow - self.c
            if cost and self.steps >= a["cost_warm"]:
                self.cost_cpu.append(cnow - self.c)
            self.steps += 1
            self.sequences += len(batch["items"])
            if cost:
                if self.steps >= a["cost_warm"] + a["cost_batches"]:
                    trainer.should_stop = True
            elif self.spent() >= self.next_val or self.spent() >= a["budget"]:
                self.validate(pl_module)
                self.next_val = min(self.spent() + a["val_every"], a["budget"])
                if self.spent() >= a["budget"]:
                    trainer.should_stop = True
            self.t, self.c = time.perf_counter(), time.process_time()

        def validate(self, pl_module):
            s = tessera_scores(pl_module.model, dm.val_dataloader(), n_users, dm.num_items)
            p = evaluate_scores(s, val_h, val_t, dm.popularity, negatives=0)["protocols"]
            point = {"seconds": self.elapsed, "cpu_seconds": self.cpu, "steps": self.steps,
                     "epochs": self.sequences / out["sequences_per_epoch"],
                     "val_ndcg@10": p["full"]["model"]["ndcg@10"],
                     "val_ndcg@10_full_history": p["full_history"]["model"]["ndcg@10"]}
            self.curve.append(point)
            print("VAL " + json.dumps(point), flush=True)
            if point["val_ndcg@10"] > self.best:
                self.best, self.best_state = point["val_ndcg@10"], copy.deepcopy(pl_module.model.state_dict())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_epochs=10**6, accelerator="cpu", logger=False, enable_checkpointing=False,
                            precision=recipe.get("precision", "32-true"),
                            callbacks=[clock], limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(system, datamodule=dm)
    if cost:
        out["cpu_per_batch"] = sum(clock.cost_cpu) / len(clock.cost_cpu)
        out["batches_per_epoch"] = math.ceil(out["sequences_per_epoch"] / COST_BATCH)
    else:
        system.model.load_state_dict(clock.best_state)
        test = tessera_scores(system.model, dm.test_dataloader(), n_users, dm.num_items)
        np.save(Path(a["workdir"]) / f"{a['name']}.test_scores.npy", test.numpy())
        out.update({"curve": clock.curve, "best_val_ndcg@10": clock.best, "train_seconds": clock.elapsed,
                    "train_cpu_seconds": clock.cpu, "steps": clock.steps,
                    "epochs": clock.sequences / out["sequences_per_epoch"]})
    (Path(a["workdir"]) / f"{a['name']}.{a['mode']}.json").write_text(json.dumps(out, indent=1))
    print("DONE", flush=True)


# --------------------------------------------------------------------------------------------
def write_recbole_inter(data, path: Path) -> None:
    """Our sequences as a RecBole atomic file (recbole 1.2.1 docs, "Atomic Files": a typed tab-separated
    header, one interaction per row): the data's own user and item ids, the timestamp being the
    position in the user's sequence, so RecBole's time order is exactly ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, seq in zip(data.users, data.sequences, strict=True):
        lines += [f"{user}\t{data.items[i - 1]}\t{t}" for t, i in enumerate(seq)]
    path.write_text("\n".join(lines) + "\n")


def _launch(name: str, args, workdir: Path, mode: str) -> subprocess.Popen:
    recipe_name, cost_data = COST_ROWS[name] if mode == "cost" else (name, {})
    spec = {"name": name, "recipe": RECIPES[recipe_name], "size": SIZE, "budget": args.budget,
            "val_every": args.val_every, "threads": args.threads, "seed": args.seed, "workdir": str(workdir),
            "mode": mode, "cost_warm": args.cost_warm, "clock": args.clock, "cost_batches": args.cost_batches,
            "cost_data": cost_data, "ranking_py": str(ROOT / "tasks" / "metrics" / "ranking.py"),
            "dataset": RECBOLE_DATASET}
    if mode == "cost" and RECIPES[recipe_name]["side"] == "recbole":
        spec["recipe"] = {**spec["recipe"], "max_length": COST_LENGTH, "batch": COST_BATCH}
    log = open(workdir / f"{name}.{mode}.log", "w")
    if RECIPES[recipe_name]["side"] == "recbole":
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # RecBole reads back its own files
        cmd = [os.path.abspath(args.recbole_python), "-c", RECBOLE_RUNNER, json.dumps(spec)]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def _wait(procs: dict, workdir: Path, mode: str) -> None:
    for name, p in procs.items():
        if p.wait() != 0:
            tail = (workdir / f"{name}.{mode}.log").read_text()[-3000:]
            raise SystemExit(f"{name} ({mode}) failed, exit {p.returncode}:\n{tail}")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    cpu = report.get("clock") == "cpu"
    for name, row in report["models"].items():
        c = row["curve"]
        ax.plot([p["cpu_seconds" if cpu else "seconds"] for p in c], [p["val_ndcg@10"] for p in c], marker="o", ms=3,
                label=name)
    ax.axhline(report["mostpop_val_ndcg@10"], color="grey", ls="--", label="MostPopular")
    ax.set_xlabel(f"training {'CPU' if cpu else 'wall-clock'} seconds (validation excluded)")
    ax.set_ylabel("validation NDCG@10 (full ranking, history removed)")
    ax.set_title(f"ML-100k, {report['budget_seconds']:.0f} {'CPU' if cpu else 'wall-clock'} seconds each, "
                 f"{report['threads']} thread(s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=300, help="training seconds (wall clock) per model")
    p.add_argument("--val-every", type=float, default=30, help="validate every this many training seconds")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the budget counts: training wall-clock seconds, or the process's CPU seconds "
                        "(with one thread, what an idle core would take; contention does not distort it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(RECIPES), help="comma-separated subset of " + ", ".join(RECIPES))
    p.add_argument("--cost-batches", type=int, default=20, help="batches timed per model for the per-epoch cost")
    p.add_argument("--cost-warm", type=int, default=3, help="batches run before timing")
    p.add_argument("--cost-rounds", type=int, default=3,
                   help="rounds of the cost rows, Tessera's and RecBole's alternating (the median round counts)")
    p.add_argument("--skip-cost", action="store_true", help="no per-epoch cost measurement")
    p.add_argument("--cost-only", action="store_true", help="only the per-epoch cost (no training race, no test)")
    p.add_argument("--recbole-python", default=".venv-recbole/bin/python")
    p.add_argument("--out", default="results/recsys_bench.json")
    p.add_argument("--workdir", default=None, help="keep the workers' files (scores, logs) here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        tessera_worker(json.loads(args.worker))
        return

    import numpy as np
    import torch

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in RECIPES]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(RECIPES)}")
    if any(RECIPES[m]["side"] == "recbole" for m in models) and not Path(args.recbole_python).is_file():
        raise SystemExit(f"--recbole-python {args.recbole_python} does not exist; run `make .venv-recbole/.installed`")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_recsys_"))
    workdir.mkdir(parents=True, exist_ok=True)

    dm = _data_module(RECIPES["tessera-sasrec"])
    data = dm.data
    (workdir / "split.json").write_text(json.dumps({"users": data.users, "items": data.items,
                                                    "sequences": data.sequences,
                                                    "popularity": dm.popularity.tolist()}))
    write_recbole_inter(data, workdir / RECBOLE_DATASET / f"{RECBOLE_DATASET}.inter")
    report: dict = {"command": "python " + " ".join(sys.argv), "budget_seconds": args.budget, "clock": args.clock,
                    "val_every_seconds": args.val_every, "threads": args.threads, "size": SIZE,
                    "recipes": {m: RECIPES[m] for m in models}, "data": data.stats,
                    "budget_clock": f"training {'CPU' if args.clock == 'cpu' else 'wall-clock'} seconds per model "
                                    "(data + step; validation excluded); the Tessera and RecBole model of one kind "
                                    "train at the same time, one thread each",
                    "loadavg": {"before": _loadavg()}, "uptime": {"before": subprocess.getoutput("uptime")}}
    t0 = time.time()
    for pair in PAIRS:  # the two models of a kind run side by side, so they share the machine's load
        names = [m for m in pair if m in models and not args.cost_only]
        if not names:
            continue
        print(f"training {', '.join(names)} for {args.budget:.0f} s each ...", flush=True)
        _wait({m: _launch(m, args, workdir, "timed") for m in names}, workdir, "timed")
        report["loadavg"][f"after {'+'.join(names)}"] = _loadavg()
    if not args.skip_cost:
        rows = [r for r, (recipe, _) in COST_ROWS.items() if recipe in models]
        runs: dict[str, list] = {r: [] for r in rows}
        report["loadavg"]["before cost"] = _loadavg()
        for k in range(args.cost_rounds):  # Tessera's and RecBole's rows alternate, one at a time, one thread
            for row in rows:
                print(f"per-epoch cost, round {k + 1}: {row} ...", flush=True)
                load = _loadavg()
                _wait({row: _launch(row, args, workdir, "cost")}, workdir, "cost")
                r = json.loads((workdir / f"{row}.cost.json").read_text())
                runs[row].append({"cpu_per_batch": r["cpu_per_batch"], "loadavg_before": load,
                                  "loadavg_after": _loadavg(), "batches_per_epoch": r["batches_per_epoch"],
                                  "sequences_per_epoch": r["sequences_per_epoch"], "recipe": r["recipe"]})
        costs = {}
        for row, rs in runs.items():
            per_batch = sorted(x["cpu_per_batch"] for x in rs)[(len(rs) - 1) // 2]  # the median (lower) round
            costs[row] = {"cpu_per_batch": per_batch, "batches_per_epoch": rs[0]["batches_per_epoch"],
                          "sequences_per_epoch": rs[0]["sequences_per_epoch"],
                          "cpu_per_epoch": per_batch * rs[0]["batches_per_epoch"], "rounds": rs}
        for kind, row in (("bert4rec", "tessera-bert4rec"), ("sasrec", "tessera-sasrec"),
                          ("sasrec_windows_same_targets", "tessera-sasrec-windows")):
            rb = "recbole-" + kind.split("_")[0]
            if row in runs and rb in runs:
                costs[f"{kind}_ratio_tessera_over_recbole"] = costs[row]["cpu_per_epoch"] / costs[rb]["cpu_per_epoch"]
                costs[f"{kind}_ratio_by_round"] = [
                    t["cpu_per_batch"] * t["batches_per_epoch"] / (b["cpu_per_batch"] * b["batches_per_epoch"])
                    for t, b in zip(runs[row], runs[rb], strict=True)]
        report["epoch_cost"] = {"what": f"CPU seconds of one epoch (one thread): {args.cost_batches} batches of "
                                        f"{COST_BATCH} timed after {args.cost_warm}, times the epoch's batches; "
                                        f"{args.cost_rounds} rounds, Tessera's and RecBole's rows alternating, the "
                                        "median round. Every row but tessera-sasrec-windows trains on RecBole's "
                                        f"training sequences (every prefix, last {COST_LENGTH} items); "
                                        "tessera-sasrec predicts only each prefix's last item (labels: last), as "
                                        "RecBole's SASRec; tessera-sasrec-windows: the same training targets in "
                                        "windows of 51 items, the next item at every position (not the same "
                                        "sequences)", "rows": {r: COST_ROWS[r][1] for r in rows}, **costs}
        report["loadavg"]["after cost"] = _loadavg()
    report["uptime"]["after"] = subprocess.getoutput("uptime")
    report["loadavg"]["after"] = _loadavg()
    report["bench_wall_seconds"] = time.time() - t0
    if args.cost_only:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print({k: v for k, v in report["epoch_cost"].items() if "ratio" in k})
        print({k: v["cpu_per_epoch"] for k, v in report["epoch_cost"].items() if isinstance(v, dict) and "rounds" in v})
        print(f"wrote {args.out}")
        return

    # every model's best-validation test scores through the one evaluator, every protocol
    hist, tgt = data.split("test")
    vh, vt = data.split("val")
    mp_val = evaluate_scores(torch.zeros(len(vt), data.num_items), vh, vt, dm.popularity, negatives=0)
    report["mostpop_val_ndcg@10"] = mp_val["protocols"]["full"]["mostpop"]["ndcg@10"]
    report["models"], table = {}, {}
    for m in models:
        r = json.loads((workdir / f"{m}.timed.json").read_text())
        scores = np.load(workdir / f"{m}.test_scores.npy", allow_pickle=False)
        ev = evaluate_scores(scores, hist, tgt, dm.popularity)
        table[m] = {proto: rows["model"] for proto, rows in ev["protocols"].items()}
        table["MostPopular"] = {proto: rows["mostpop"] for proto, rows in ev["protocols"].items()}
        row = {k: r[k] for k in ("curve", "best_val_ndcg@10", "train_seconds", "train_cpu_seconds", "steps", "epochs",
                                 "sequences_per_epoch")}
        row["cpu_seconds_per_epoch_as_trained"] = r["train_cpu_seconds"] / r["epochs"]
        if RECIPES[m]["side"] == "recbole":
            own = r["recbole_test"]["ndcg@10"]
            ours = table[m]["full_history"]["ndcg@10"]
            row["recbole_check"] = {"recbole_own_ndcg@10": own, "tessera_full_history_ndcg@10": ours,
                                    "abs_diff": abs(own - ours), "recbole_own_hit@10": r["recbole_test"]["hit@10"],
                                    "tessera_full_history_hr@10": table[m]["full_history"]["hr@10"],
                                    "split_check": r["split_check"]}
        report["models"][m] = row
    report["candidates"] = ev["candidates"]
    report["test"] = table
    mp = table["MostPopular"]
    best = max((m for m in models if RECIPES[m]["side"] == "tessera"), key=lambda m: table[m]["full"]["ndcg@10"],
               default=None)
    targets = {}
    for kind in ("bert4rec", "sasrec"):
        if f"tessera-{kind}" in table and f"recbole-{kind}" in table:
            targets[f"tessera_{kind}_ge_recbole_full"] = (table[f"tessera-{kind}"]["full"]["ndcg@10"]
                                                          >= table[f"recbole-{kind}"]["full"]["ndcg@10"])
    if best:
        targets["best_tessera"] = best
        targets["best_tessera_over_mostpop_full"] = table[best]["full"]["ndcg@10"] / mp["full"]["ndcg@10"]
        targets["best_tessera_above_mostpop_every_protocol"] = all(
            table[best][proto]["ndcg@10"] > mp[proto]["ndcg@10"] for proto in mp)
    report["targets"] = targets
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    print(f"\nML-100k test, NDCG@10 by protocol ({len(tgt)} users; best-validation weights after "
          f"{args.budget:.0f} training seconds each)")
    protos = list(mp)
    print(f"{'model':18}" + "".join(f"{p:>14}" for p in protos) + f"{'HR@10 full':>12}")
    for m, t in table.items():
        print(f"{m:18}" + "".join(f"{t[p]['ndcg@10']:14.4f}" for p in protos) + f"{t['full']['hr@10']:12.4f}")
    for m, row in report["models"].items():
        if "recbole_check" in row:
            c = row["recbole_check"]
            print(f"{m}: RecBole's own NDCG@10 {c['recbole_own_ndcg@10']:.6f}, ours (full_history) "
                  f"{c['tessera_full_history_ndcg@10']:.6f}; split check {c['split_check']}")
    if "epoch_cost" in report:
        print({k: v for k, v in report["epoch_cost"].items() if "ratio" in k})
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

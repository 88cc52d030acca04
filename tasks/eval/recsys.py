"""``tessera eval recsys``: leave-one-out ranking of a BERT4Rec / SASRec run or encoder folder, next to MostPopular.

Each user's last item (``--split test``; the one before it with ``--split val``) is ranked after
their history under every protocol of tasks/metrics/ranking.py: full ranking without the history
(``full``), full ranking with it (``full_history``, RecBole's protocol for sequential models), and
``--negatives`` (100) negatives drawn by popularity (``pop100``, BERT4Rec's paper) and uniformly
(``uni100``, SASRec's paper) from the items the user has not seen (fixed per user: the same
candidates every time). MostPopular (training-split counts) is scored by the same code on the same
candidates. Writes ``ranking.json`` (HR and NDCG at 1/5/10/20 and MRR per protocol and model) and
``ranking.png`` (HR@10 and NDCG@10 per protocol) into ``--out``.

The model comes from a run (``tasks.runs.load_system``: its config.yaml and checkpoint) or from an
exported folder (config.json + model.safetensors + item_ids.json). The data's item ids are mapped
through the model's item-id map; items the model does not know are dropped from histories and a
user whose held-out item is unknown is skipped (both counted).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..jobs import UserError, job

ML100K = "ml-100k"


def load_model(src: str | Path):
    """(BERT4Rec/SASRec in eval mode, {data item id: model index}, the run's data set or None) of a run or folder."""
    from ..embed import open_encoder_folder
    from ..embed.recsys import load_bert4rec, read_item_ids

    path = Path(src).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--run {path} does not exist; give a recsys run folder (trainer.default_root_dir), "
                                "its lightning_logs/version_N, or an encoder folder")
    if path.is_dir() and (path / "config.json").is_file():  # an exported encoder folder
        folder, _ = open_encoder_folder(path)
        return load_bert4rec(folder), read_item_ids(folder), None
    from ..recsys import BERT4RecSystem
    from ..runs import load_system

    system, dm, _ = load_system(path, with_data=True)
    if not isinstance(system, BERT4RecSystem) or dm is None:
        raise UserError(f"--run {path} is a {type(system).__name__} run, not BERT4Rec/SASRec; give a run of configs/recsys/*.yaml")
    dm.prepare_data()
    dm.setup("test")
    ids = {item: i for i, item in enumerate(dm.data.items, start=1)}
    return system.model, ids, str(dm._path())


def evaluate(model, item_ids: dict[str, int], data_path: Path, split: str = "test", negatives: int = 100,
             seed: int = 0, min_interactions: int = 5, batch_size: int = 256) -> dict:
    """The ranking report (see the module docstring) of ``model`` on ``data_path``'s leave-one-out ``split``."""
    import torch

    from modalities.recsys import build_sequences, read_interactions

    from ..metrics.ranking import RankingEvaluator

    try:
        data = build_sequences(read_interactions(data_path), min_interactions)
    except ValueError as e:  # e.g. no user with enough interactions: name the file it was read from
        named = str(e) if str(data_path) in str(e) else f"{data_path}: {e}"
        raise ValueError(named) from None
    num_items = model.config.num_items
    skipped = {"unknown items dropped from histories": 0, "users whose held-out item is unknown": 0,
               "users with no known history item": 0}
    cut = 1 if split == "test" else 2  # the held-out item: last (test) or second to last (val)
    histories, targets, users, train_items = [], [], [], []  # model indices, time order
    for u, seq in enumerate(data.sequences):
        mapped = [item_ids.get(data.items[i - 1]) for i in seq]
        skipped["unknown items dropped from histories"] += mapped.count(None)
        target, history = mapped[-cut], [m for m in mapped[: len(mapped) - cut] if m is not None]
        train_items += [m for m in mapped[:-2] if m is not None]  # the training split: before the val item
        if target is None:
            skipped["users whose held-out item is unknown"] += 1
            continue
        if not history:
            skipped["users with no known history item"] += 1
            continue
        histories.append(history)
        targets.append(target)
        users.append(u)
    if not histories:
        raise UserError(f"no user of {data_path} can be ranked: the model knows none of its items "
                        f"({skipped}); give the data the model was trained on")
    popularity = torch.bincount(torch.tensor(train_items, dtype=torch.long), minlength=num_items + 1)[1:].double()
    evaluator = RankingEvaluator(popularity, negatives, seed)
    with torch.inference_mode():
        for b in range(0, len(histories), batch_size):
            hist = histories[b : b + batch_size]
            scores = model.item_scores(model.user_vectors(hist)).float()  # (B, num_items)
            evaluator.update(scores, [torch.tensor(h) for h in hist], torch.tensor(targets[b : b + batch_size]),
                             torch.tensor(users[b : b + batch_size]))
    report = evaluator.compute()
    return {
        "data": str(data_path), "split": split, "users": len(histories), "items": num_items,
        "negatives": negatives, "seed": seed, "skipped": skipped, "candidates": report["candidates"],
        "protocols": report["protocols"],
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(result["protocols"])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric in zip(axes, ("hr@10", "ndcg@10"), strict=True):
        for j, (who, label) in enumerate((("model", result.get("architecture", "model")), ("mostpop", "MostPopular"))):
            vals = [result["protocols"][p][who][metric] for p in protocols]
            ax.bar([x + 0.38 * j for x in range(len(protocols))], vals, width=0.38, label=label)
        ax.set_xticks([x + 0.19 for x in range(len(protocols))], protocols)
        ax.set_title(f"{metric.upper()} ({result['split']}, {result['users']} users)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@job("eval", "recsys", help="leave-one-out ranking of a BERT4Rec/SASRec run or encoder folder vs MostPopular, every protocol (JSON + plot)",
     example="tessera eval recsys --run runs/bert4rec-ml100k --out runs/eval/recsys")
def eval_recsys(args: argparse.Namespace) -> int:
    """Rank every user's held-out item under every protocol, for the model and for MostPopular on
    the same candidates."""
    t0 = time.perf_counter()
    if args.negatives < 0:
        raise UserError(f"--negatives must be >= 0 (0: full ranking only), got {args.negatives}")
    model, item_ids, run_data = load_model(args.run)
    if args.data is not None:
        data_path = Path(args.data).expanduser()
    elif run_data is not None:
        data_path = Path(run_data)
    else:
        data_path = Path(ML100K)
    if str(data_path) == ML100K:
        from ..data.fetch import default_cache_dir
        from ..data.recsys import fetch_ml100k

        data_path = fetch_ml100k(default_cache_dir())
    elif not data_path.is_file():
        raise FileNotFoundError(f"--data {data_path} does not exist; give an interaction file "
                                f"(.inter, .csv, .tsv, .dat, u.data) or {ML100K!r}")
    result = evaluate(model, item_ids, data_path, args.split, args.negatives, args.seed, args.min_interactions)
    arch = type(model).__name__
    result = {"model": str(args.run), "architecture": arch, **result, "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranking.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "ranking.png")
    print(f"{'protocol':13} {'':10} {'HR@10':>7} {'NDCG@10':>8} {'NDCG@20':>8} {'MRR':>7}")
    for p, rows in result["protocols"].items():
        for who, m in rows.items():
            print(f"{p:13} {who:10} {m['hr@10']:7.4f} {m['ndcg@10']:8.4f} {m['ndcg@20']:8.4f} {m['mrr']:7.4f}")
    print(f"wrote {out / 'ranking.json'} and {out / 'ranking.png'}")
    return 0


@eval_recsys.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a recsys run folder, its lightning_logs/version_N, a .ckpt, "
                   "or an encoder folder (config.json + model.safetensors + item_ids.json)")
    p.add_argument("--data", default=None, help="interaction file or 'ml-100k' (default: the run's own data; "
                   "for an encoder folder: ml-100k)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which held-out item to rank")
    p.add_argument("--negatives", type=int, default=100, help="negatives per user for the popularity-sampled and "
                   "uniform protocols (100; a user with fewer unseen items gets them all, counted)")
    p.add_argument("--seed", type=int, default=0, help="seeds the negatives (the training run's eval_seed: 0)")
    p.add_argument("--min-interactions", type=int, default=5, help="users with fewer are dropped, as in training")
    p.add_argument("--out", default="runs/eval/recsys", help="folder for ranking.json and ranking.png")


@job("eval", "recsys-predict", help="top-k items after each history of a file (the data's own ids; JSON lines out)",
     example="tessera eval recsys-predict --run runs/sasrec-ml100k --histories users.jsonl --out top10.jsonl")
def eval_recsys_predict(args: argparse.Namespace) -> int:
    """Recommend the next items for every history in --histories: JSON lines ``{"user", "items"}``,
    a log file (.inter/.csv/.tsv/.dat/.data/.json: grouped by user, time order) or .txt (one history per
    line). Item ids are the data's own; users need not be in the training data; unknown items are
    dropped and counted; a history with no known item gets an empty list."""
    from modalities.recsys import ItemRecommender

    from ..embed.base import Collected
    from ..embed.recsys import histories_in

    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    path = Path(args.histories).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--histories {path} does not exist; give a .jsonl file of "
                                '{"user": ..., "items": [...]} lines, an interaction log or a .txt of histories')
    model, item_ids, _ = load_model(args.run)
    c = Collected()
    histories = histories_in(path, c)
    if not histories:
        raise UserError(f"--histories {path} holds no history ({dict(c.skipped) or 'empty'}); one user per line: "
                        '{"user": "42", "items": ["50", "172"]}')
    recs = ItemRecommender(model, item_ids).recommend([h for _, h in histories], args.k, not args.include_seen)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for (user, _), rec in zip(histories, recs, strict=True):
            f.write(json.dumps({"user": user, **rec}) + "\n")
    empty = sum(not r["items"] for r in recs)
    unknown = sum(r["unknown"] for r in recs)
    print(f"wrote {len(recs)} users' top {args.k} to {out} ({unknown} unknown items dropped, {empty} users with "
          f"no known item{', skipped lines: ' + str(dict(c.skipped)) if c.skipped else ''})")
    return 0


@eval_recsys_predict.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a recsys run folder or encoder folder (with item_ids.json)")
    p.add_argument("--histories", required=True, help=".jsonl ({\"user\", \"items\"} per line, oldest first), "
                   "an interaction log, or .txt (item ids per line)")
    p.add_argument("--out", required=True, help="JSON lines out: {user, items, scores, unknown} per history")
    p.add_argument("--k", type=int, default=10, help="items per user")
    p.add_argument("--include-seen", action="store_true", help="allow items of the history in the top k")

"""``tessera eval code``'s results: the headline metric per task, the table, the plot, and
joining results.json files (``merge``: models or learning rates from separate runs;
``pool_seeds``: mean and standard deviation over seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

MODELS = ("pretrained", "scratch", "bilstm")

def select(sweep: list[dict], parameters: int, key: str | None = None) -> dict:
    """A model's table entry from its runs (one per learning rate): the run with the best
    validation score (``key``, default the task's headline metric) gives the test figures; a
    single run without validation is taken as is."""
    key = key or headline_key(sweep[0])
    has_val = all("val/" + key in r for r in sweep)
    if len(sweep) > 1 and not has_val:
        raise ValueError(f"cannot choose among {len(sweep)} runs without their validation scores (val/{key})")
    best = max(sweep, key=lambda r: r.get("val/" + key, float("-inf")))
    return {**{k: v for k, v in best.items() if k.startswith("test/")}, "lr": best["lr"],
            **({"best_step": best["best_step"]} if "best_step" in best else {}),
            "selected_by": "val/" + key if has_val else None, "fit_seconds": round(sum(r["fit_seconds"] for r in sweep), 1),
            "parameters": parameters, "sweep": sweep}


# the settings that make two results.json files one experiment; defaults for files written before an option existed
_SETTINGS = ("steps", "batch_size", "max_length", "max_examples", "precision", "pooling", "val_every", "select_by")
_SETTING_DEFAULTS = {"pooling": "cls", "val_every": None, "select_by": None}


def _require_same(paths: list, runs: list[dict], keys: tuple[str, ...], what: str) -> None:
    """Raise unless every results file agrees with the first on ``keys``."""
    def setting(r: dict, k: str):
        if k == "init_from":
            return _init_from(r["settings"])
        return r["settings"].get(k, _SETTING_DEFAULTS.get(k))

    for p, r in zip(paths[1:], runs[1:], strict=True):
        diff = {k: (setting(runs[0], k), setting(r, k)) for k in keys if setting(runs[0], k) != setting(r, k)}
        if diff:
            raise ValueError(f"{p} {what} {paths[0]} (first, this): {diff}")


def _init_from(settings: dict):
    """The pretrained weights a results file names (files written before init_from say "pretrained")."""
    return settings.get("init_from", settings.get("pretrained"))


def _merge_source(entry) -> tuple[Path, tuple[str, ...]]:
    """``path`` or ``path:model,model``: a results.json and the models to take from it (default all)."""
    text = str(entry)
    head, _, tail = text.rpartition(":")
    if head and tail and all(m in MODELS for m in tail.split(",")):
        return Path(head), tuple(tail.split(","))
    return Path(text), MODELS


def merge(paths: list) -> dict:
    """Join results.json files of runs that evaluated different models or learning rates (e.g.
    run in parallel) into one table. Their benchmark settings must agree; the pretrained
    checkpoint is taken from the run that has one. A model that appears in several files has its
    runs pooled and the best validation score among them chosen again (all must have one).
    An entry ``path:scratch,bilstm`` takes only those models from that file (e.g. the baselines of
    an earlier run next to a new checkpoint's pretrained rows); pretrained rows from different
    checkpoints are refused."""
    entries = [str(p) for p in paths]
    sources = [_merge_source(p) for p in entries]
    paths = [p for p, _ in sources]
    runs = [json.loads(Path(p).read_text()) for p in paths]
    for r, (_, keep) in zip(runs, sources, strict=True):
        for row in r["tasks"].values():
            for m in [k for k in row if k in MODELS and k not in keep]:
                del row[m]
    _require_same(paths, runs, (*_SETTINGS, "seed"), "was run with other settings than")
    with_pretrained = {str(p): _init_from(r["settings"]) for p, r in zip(paths, runs, strict=True)
                       if any("pretrained" in row for row in r["tasks"].values())}
    if len(set(with_pretrained.values())) > 1:
        raise ValueError(f"pretrained rows from different checkpoints cannot share a table: {with_pretrained}; "
                         "take the other files' baselines only, as PATH:scratch,bilstm")
    out = {"settings": {**runs[0]["settings"], "merged_from": entries}, "tasks": {}}
    out["settings"].pop("pretrained", None)
    out["settings"]["init_from"] = next(iter(with_pretrained.values()), None)
    for r in runs:
        for task, row in r["tasks"].items():
            into = out["tasks"].setdefault(task, {})
            for k, v in row.items():
                if k in MODELS and k in into:
                    lrs = [r["lr"] for r in into[k]["sweep"]]
                    if any(r["lr"] in lrs for r in v["sweep"]):
                        raise ValueError(f"model {k} on {task} has a learning rate twice in {[str(p) for p in paths]}")
                    into[k] = select(into[k]["sweep"] + v["sweep"], v["parameters"], r["settings"].get("select_by"))
                into.setdefault(k, v)
    return out


def pool_seeds(paths: list) -> dict:
    """Mean and spread over results.json files that differ only in the seed (each one table, e.g.
    from --merge): per task and model the test figure of each seed's validation-chosen run, their
    mean and sample standard deviation. Fine-tuning noise (head initialisation, batch order) is
    what the seeds sample; the test set stays the same."""
    import statistics

    runs = [json.loads(Path(p).read_text()) for p in paths]
    _require_same(paths, runs, (*_SETTINGS, "init_from"), "differs in more than the seed from")
    seeds = [r["settings"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears twice in {[str(p) for p in paths]}: {seeds}")
    out = {"settings": {**runs[0]["settings"], "seed": seeds, "pooled_from": [str(p) for p in paths]}, "tasks": {}}
    for task in runs[0]["tasks"]:
        if any(task not in r["tasks"] for r in runs):
            raise ValueError(f"task {task} is missing from some of {[str(p) for p in paths]}")
        key, _ = headline(runs[0]["tasks"][task])
        row = {}
        for m in (*MODELS, "majority_class"):
            if not all(m in r["tasks"][task] for r in runs):
                continue
            vals = [r["tasks"][task][m].get(key, r["tasks"][task][m].get("test/accuracy")) for r in runs]
            row[m] = {key: round(statistics.fmean(vals), 4), "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                      "per_seed": vals, "lr": [r["tasks"][task][m].get("lr") for r in runs]}
        out["tasks"][task] = row
    return out


def headline_key(metrics: dict) -> str:
    return "joint" if any(k.endswith("/joint") for k in metrics) else "accuracy"


def headline(row: dict) -> tuple[str, dict]:
    """The metric a task is judged by (the one its runs were chosen by, if any) and its value per model."""
    first = next((v for k, v in row.items() if k in MODELS), {})
    chosen = first.get("selected_by")
    key = "test/" + (chosen.split("/", 1)[1] if chosen else headline_key(first))
    values = {m: row[m].get(key, row[m].get("test/accuracy")) for m in (*MODELS, "majority_class") if m in row}
    if key not in ("test/accuracy", "test/classification"):  # only these compare with the majority label
        values.pop("majority_class", None)
    return key, values


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    models = [*MODELS, "majority_class"]
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(tasks)), 3.5))
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        vals = [headline(results["tasks"][t])[1].get(m, float("nan")) for t in tasks]
        spread = [results["tasks"][t].get(m, {}).get("std", 0.0) for t in tasks]  # pooled seeds: error bars
        ax.bar([i + j * width for i in range(len(tasks))], vals, width, label=m, yerr=spread if any(spread) else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))])
    ax.set_xticklabels([f"{t}\n({headline(results['tasks'][t])[0].split('/')[1]})" for t in tasks], fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    seeds = results["settings"].get("seed")
    over = f", mean and std over {len(seeds)} seeds" if isinstance(seeds, list) else ""
    ax.set_title(f"CuBERT benchmark, {results['settings']['steps']} fine-tuning steps{over}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(results: dict) -> None:
    print(f"{'task':26} {'metric':12} " + " ".join(f"{m:>10}" for m in (*MODELS, "majority")))
    for task, row in results["tasks"].items():
        key, vals = headline(row)
        cells = [vals.get(m) for m in (*MODELS, "majority_class")]
        print(f"{task:26} {key.split('/')[1]:12} " + " ".join(f"{v:>10.3f}" if v is not None else f"{'-':>10}" for v in cells))


def _write_table(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "results.png")
    print_table(results)
    print(f"wrote {out / 'results.json'} and {out / 'results.png'}")


def _existing_files(paths: list[str], option: str) -> None:
    for entry in paths:
        path = _merge_source(entry)[0]
        if not path.is_file():
            raise FileNotFoundError(f"{option} {path} does not exist; give results.json files of `tessera eval code`")



"""The CuBERT comparison on our benchmark: the pretrained encoder, the same Transformer from scratch,
and a BiLSTM, fine-tuned with the same budget on the same splits. Writes results.json and
results.png (test accuracy per task and model) into --out.

    python scripts/code_eval.py --benchmark ~/.cache/tessera/code/benchmark-stdlib \\
        --tokenizer ~/.cache/tessera/code/mlm/stdlib/tokenizer-4096-300 \\
        --pretrained runs/code/mlm-tiny/lightning_logs/version_0/checkpoints/last.ckpt \\
        --config configs/code/varmisuse_tiny.yaml --tasks variable_misuse exception_type --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import yaml
from safetensors.torch import save_file

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import BiLSTMConfig, BiLSTMEncoder
from tasks.callbacks import KeepBest, ReleaseHeap
from tasks.code import POOLINGS, CodeClassifierSystem, VarMisusePointerSystem, encoder_config
from tasks.data.code import CodeTaskDataModule

MODELS = ("pretrained", "scratch", "bilstm")
# the validation metrics a task's runs can be chosen by (--select-by); the first is the default
SELECTABLE = {"variable_misuse_repair": ("joint", "classification", "localization", "repair", "auroc")}
CLASSIFIER_METRICS = ("accuracy",)  # every other task's


def selectable(task: str) -> tuple[str, ...]:
    """The validation metrics ``task``'s runs can be chosen by, its default first."""
    return SELECTABLE.get(task, CLASSIFIER_METRICS)


def build(model: str, task: str, enc_cfg: dict, num_classes: int, pretrained: str | None, lr: float,
          pooling: str = "cls"):
    if model == "bilstm":
        encoder = BiLSTMEncoder(BiLSTMConfig(vocab_size=enc_cfg["vocab_size"], embedding_size=enc_cfg["hidden_size"],
                                             hidden_size=enc_cfg["hidden_size"], num_layers=2))
    else:
        encoder = TokenEncoder(TokenEncoderConfig(**enc_cfg))
    weights = pretrained if model == "pretrained" else None
    if task == "variable_misuse_repair":
        return VarMisusePointerSystem(encoder, pretrained=weights, lr=lr)
    return CodeClassifierSystem(encoder, num_classes=num_classes, pretrained=weights, lr=lr,
                                pooling="mean" if model == "bilstm" else pooling)


def _config_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def save_run(system, task: str, dm: CodeTaskDataModule, folder: Path) -> Path:
    """A fine-tuned system's weights (safetensors) and the YAML that rebuilds it (the shape of a
    ``tessera fit`` fine-tuning config): what ``tasks.code_predict.load_finetuned`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    enc = system.encoder
    enc_path = "modalities.code.BiLSTMEncoder" if isinstance(enc, BiLSTMEncoder) else "modalities.TokenEncoder"
    hp = {k: v for k, v in dict(system.hparams).items() if k not in ("encoder", "pretrained")}
    cfg = {"model": {"class_path": f"tasks.code.{type(system).__name__}",
                     "init_args": {**hp, "encoder": {"class_path": enc_path,
                                                     "init_args": {"config": _config_dict(enc.config)}}}},
           "data": {"class_path": "tasks.data.code.CodeTaskDataModule",
                    "init_args": {"task": task, "benchmark": str(dm.benchmark), "tokenizer": str(dm.tokenizer_path),
                                  "max_length": dm.max_length, "batch_size": dm.batch_size}}}
    save_file({k: v.detach().contiguous().cpu() for k, v in system.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def evaluate(tasks, benchmark: Path, tokenizer: Path, pretrained: str | None, enc_cfg: dict, out: Path,
             steps: int = 300, batch_size: int = 16, max_length: int = 256, max_examples: int | None = 4000,
             lr: float | list[float] = 3e-4, models=MODELS, seed: int = 0, progress: bool = False,
             precision: str = "32-true", bilstm_lr: float | list[float] | None = None, pooling: str = "cls",
             val_every: int | None = None, select_by: str | None = None, save_models: bool = False) -> dict:
    """Fine-tune every model on every task with the same budget and report test metrics.

    ``lr`` may be a list: each model then trains once per learning rate and the one with the best
    validation score (the task's headline metric on the valid split) gives its test figures, so
    no model is judged at a learning rate that suits another (CuBERT tuned per model, too).
    ``bilstm_lr`` gives the BiLSTM its own learning rate(s) (default: ``lr``). ``pooling``: the
    Transformers' classification input, [CLS] ("cls", CuBERT's; only NSP trains it in pretraining),
    the mean ("mean") or the element-wise max ("max") over tokens; the BiLSTM always mean-pools.
    ``val_every``: validate every that many steps and test the weights of the best validation
    round (checkpoint selection on the valid split, which then also chooses among learning rates);
    None: test the last weights. ``select_by``: the validation metric that chooses the round and
    the learning rate (default the task's headline: joint accuracy for localisation + repair,
    accuracy otherwise; e.g. "classification" judges the pointer model as a bug detector).
    ``save_models``: each run's tested weights (model.safetensors) and a YAML describing them
    (config.yaml) in OUT/<task>/<model>/lr<rate>/, for ``scripts/code_predict.py``."""
    for task in tasks:
        if select_by is not None and select_by not in selectable(task):
            raise ValueError(f"select_by={select_by!r} is not a validation metric of {task}; choose one of {selectable(task)}")
    lrs = [lr] if isinstance(lr, int | float) else list(lr)
    lstm_lrs = lrs if bilstm_lr is None else [bilstm_lr] if isinstance(bilstm_lr, int | float) else list(bilstm_lr)
    results: dict = {"settings": {"steps": steps, "batch_size": batch_size, "max_length": max_length,
                                  "max_examples": max_examples, "lr": lrs, "bilstm_lr": lstm_lrs, "pretrained": pretrained, "seed": seed,
                                  "precision": precision, "pooling": pooling, "val_every": val_every, "select_by": select_by,
                                  "selection": "best validation score over lr" + (" and step" if val_every else "")},
                     "tasks": {}}
    for task in tasks:
        dm = CodeTaskDataModule(task, str(benchmark), str(tokenizer), max_length=max_length, batch_size=batch_size,
                                max_examples=max_examples, seed=seed)
        dm.setup("fit")
        train_labels = Counter(it["label"] for it in dm.sets["train"].items)
        majority = train_labels.most_common(1)[0][0]
        test_items = dm.sets["test"].items
        row = {"data": dm.stats, "majority_class": {"test/accuracy": sum(it["label"] == majority for it in test_items) / max(1, len(test_items))}}
        for model in models:
            if model == "pretrained" and not pretrained:
                continue
            sweep, rates = [], lstm_lrs if model == "bilstm" else lrs
            for rate in rates:
                L.seed_everything(seed, verbose=False)
                system = build(model, task, enc_cfg, dm.num_classes, pretrained, rate, pooling)
                keep = KeepBest("val/" + (select_by or selectable(task)[0])) if val_every else None
                trainer = L.Trainer(
                    max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=progress, enable_model_summary=False,
                    default_root_dir=out / task / model / f"lr{rate:g}", precision=precision,
                    use_distributed_sampler=False, val_check_interval=val_every, check_val_every_n_epoch=None,
                    limit_val_batches=1.0 if val_every else 0, num_sanity_val_steps=0,
                    callbacks=[ReleaseHeap(), *([keep] if keep else [])],
                )
                t0 = time.time()
                trainer.fit(system, dm)
                val, chosen = {}, {}
                if keep is not None:
                    if not keep.history or keep.history[-1][0] != trainer.global_step:
                        trainer.validate(system, dm, verbose=False)  # the last weights compete too
                    keep.restore(system)
                    val = keep.best_metrics  # the restored weights' validation round: no second pass
                    chosen = {"best_step": keep.best_step, "val_curve": [[s, round(v, 4)] for s, v in keep.history]}
                elif len(rates) > 1:  # the valid split chooses among learning rates
                    trainer.limit_val_batches = 1.0
                    (val,) = trainer.validate(system, dm, verbose=False)
                (test,) = trainer.test(system, dm, verbose=False)
                run = {"lr": rate, **{k: round(float(v), 4) for k, v in {**val, **test}.items()
                                      if k.split("/")[0] in ("val", "test") and not k.endswith("/loss")},
                       **chosen, "fit_seconds": round(time.time() - t0, 1)}
                if save_models:
                    run["saved"] = str(save_run(system, task, dm, out / task / model / f"lr{rate:g}"))
                sweep.append(run)
                print(f"[{task}] {model} lr {rate:g}: {run}", flush=True)
            row[model] = select(sweep, sum(p.numel() for p in system.encoder.parameters()), select_by)
        results["tasks"][task] = row
        out.mkdir(parents=True, exist_ok=True)  # written after every task: a long run keeps what it has
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "results.png")
    return results


def select(sweep: list[dict], parameters: int, key: str | None = None) -> dict:
    """A model's table entry from its runs (one per learning rate): the run with the best
    validation score (``key``, default the task's headline metric) gives the test figures; a
    single run without validation is taken as is."""
    key = key or _headline_key(sweep[0])
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
        return r["settings"].get(k, _SETTING_DEFAULTS.get(k))

    for p, r in zip(paths[1:], runs[1:], strict=True):
        diff = {k: (setting(runs[0], k), setting(r, k)) for k in keys if setting(runs[0], k) != setting(r, k)}
        if diff:
            raise ValueError(f"{p} {what} {paths[0]} (first, this): {diff}")


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
    with_pretrained = {str(p): r["settings"].get("pretrained") for p, r in zip(paths, runs, strict=True)
                       if any("pretrained" in row for row in r["tasks"].values())}
    if len(set(with_pretrained.values())) > 1:
        raise ValueError(f"pretrained rows from different checkpoints cannot share a table: {with_pretrained}; "
                         "take the other files' baselines only, as PATH:scratch,bilstm")
    out = {"settings": {**runs[0]["settings"], "merged_from": entries}, "tasks": {}}
    out["settings"]["pretrained"] = next(iter(with_pretrained.values()), None)
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
    _require_same(paths, runs, (*_SETTINGS, "pretrained"), "differs in more than the seed from")
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


def _headline_key(metrics: dict) -> str:
    return "joint" if any(k.endswith("/joint") for k in metrics) else "accuracy"


def headline(row: dict) -> tuple[str, dict]:
    """The metric a task is judged by (the one its runs were chosen by, if any) and its value per model."""
    first = next((v for k, v in row.items() if k in MODELS), {})
    chosen = first.get("selected_by")
    key = "test/" + (chosen.split("/", 1)[1] if chosen else _headline_key(first))
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", type=Path)
    p.add_argument("--tokenizer", type=Path)
    p.add_argument("--merge", nargs="+", default=None, metavar="RESULTS[:MODEL,...]",
                   help="join these results.json files (runs of different models) into --out instead of training; "
                        "PATH:scratch,bilstm takes only those models from PATH")
    p.add_argument("--pool-seeds", nargs="+", default=None, metavar="RESULTS",
                   help="mean and standard deviation over results.json files that differ only in --seed, into --out")
    p.add_argument("--pretrained", default=None, help="MaskedLMSystem .ckpt or encoder folder")
    p.add_argument("--config", type=Path, default=Path("configs/code/varmisuse_tiny.yaml"),
                   help="a fine-tuning YAML whose encoder config all Transformers use")
    p.add_argument("--tasks", nargs="+", default=["variable_misuse"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-examples", type=int, default=4000)
    p.add_argument("--lr", type=float, nargs="+", default=[3e-4],
                   help="one or more; with several, each model keeps the one with the best validation score")
    p.add_argument("--bilstm-lr", type=float, nargs="+", default=None, help="the BiLSTM's own learning rate(s)")
    p.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    p.add_argument("--pooling", default="cls", choices=POOLINGS,
                   help="the Transformers' classification input: [CLS] (CuBERT), the mean or the max over tokens")
    p.add_argument("--val-every", type=int, default=None,
                   help="validate every N steps and test the best validation round's weights (default: the last)")
    p.add_argument("--select-by", default=None, choices=sorted({k for v in SELECTABLE.values() for k in v} | set(CLASSIFIER_METRICS)),
                   help="the validation metric that chooses the round and the lr (default: joint for "
                        "variable_misuse_repair, accuracy otherwise); classification judges the pointer as a bug detector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each run's tested weights + config.yaml under OUT (for scripts/code_predict.py)")
    p.add_argument("--out", type=Path, default=Path("runs/code/eval"))
    a = p.parse_args(argv)
    if a.merge or a.pool_seeds:
        results = merge(a.merge) if a.merge else pool_seeds(a.pool_seeds)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, a.out / "results.png")
        print_table(results)
        if a.pool_seeds:
            print(f"seeds {results['settings']['seed']}; per seed:")
            for task, row in results["tasks"].items():
                for m, v in row.items():
                    print(f"  {task:26} {m:15} " + " ".join(f"{x:.3f}" for x in v["per_seed"]) + f"   std {v['std']:.3f}")
        print(f"wrote {a.out / 'results.json'} and {a.out / 'results.png'}")
        return 0
    if a.benchmark is None or a.tokenizer is None:
        p.error("--benchmark and --tokenizer are required (unless --merge or --pool-seeds)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = evaluate(a.tasks, a.benchmark, a.tokenizer, a.pretrained, encoder_config(a.config), a.out, a.steps,
                       a.batch_size, a.max_length, a.max_examples, a.lr, a.models, a.seed, progress=True,
                       precision=a.precision, bilstm_lr=a.bilstm_lr, pooling=a.pooling, val_every=a.val_every,
                       select_by=a.select_by, save_models=a.save_models)
    print_table(results)
    print(f"wrote {a.out / 'results.json'} and {a.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CuBERT comparison, and two more ways to judge a code encoder, as ``tessera eval`` jobs:

    tessera eval code --benchmark cache:code/benchmark-stdlib --init-from runs/code/mlm-tiny/lightning_logs/version_0/encoder
    tessera eval code-misuse --mlm runs/code/mlm-small --benchmark cache:code/benchmark-stdlib
    tessera eval code-predict --model runs/code/eval/variable_misuse_repair/pretrained/lr0.0003 mypkg/

``code``: the pretrained encoder, the same Transformer from scratch and a BiLSTM, fine-tuned with
the same budget on the same splits; results.json + results.png (test figures per task and model)
in --out, and each run's tested weights (reload with ``tasks.runs.load_system``).
``code-misuse``: Variable Misuse from the masked LM's own head, no fine-tuning (``tasks.code_misuse``).
``code-predict``: a fine-tuned bug detector over your Python files, JSON lines (``tasks.code_predict``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

from ..jobs import UserError, job

MODELS = ("pretrained", "scratch", "bilstm")
# the validation metrics a task's runs can be chosen by (--select-by); the first is the default
SELECTABLE = {"variable_misuse_repair": ("joint", "classification", "localization", "repair", "auroc")}
CLASSIFIER_METRICS = ("accuracy",)  # every other task's
POOLINGS = ("cls", "mean", "max")


def selectable(task: str) -> tuple[str, ...]:
    """The validation metrics ``task``'s runs can be chosen by, its default first."""
    return SELECTABLE.get(task, CLASSIFIER_METRICS)


def _config_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def encoder_config(config_yaml: str | Path) -> dict:
    """The encoder config (model.init_args.encoder.init_args.config) of a pretraining or fine-tuning YAML."""
    import yaml

    path = Path(config_yaml)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist; give a configs/code/*.yaml")
    raw = yaml.safe_load(path.read_text())
    try:
        return dict(raw["model"]["init_args"]["encoder"]["init_args"]["config"])
    except (KeyError, TypeError):
        raise ValueError(f"{path} has no model.init_args.encoder.init_args.config; give a configs/code/*.yaml") from None


def pretrained_setup(init_from: str | Path) -> tuple[dict, Path | None]:
    """(the encoder config, the tokenizer it was trained with or None) of ``init_from``: an encoder
    folder (config.json; its tokenizer inside) or a masked-LM run (its data module's tokenizer)."""
    from modalities import load_encoder

    from ..runs import load_system

    path = Path(init_from).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--init-from {path} does not exist; give an encoder folder (a run's <log dir>/encoder) "
                                "or a masked-LM run folder")
    if path.is_dir() and (path / "config.json").is_file():
        meta = json.loads((path / "config.json").read_text()).get("meta") or {}
        if meta.get("modality") not in (None, "code"):
            raise UserError(f"--init-from {path} is a {meta['modality']} encoder folder; give a code encoder "
                            "(a configs/code/mlm_*.yaml run's encoder/, or a CuBERT folder)")
        has_tok = (path / "tokenizer.json").is_file() or any(path.glob("*vocab*.txt"))
        return _config_dict(load_encoder(path).config), path if has_tok else None
    system, data, _ = load_system(path, with_data=True)
    return _config_dict(system.encoder.config), getattr(data, "tokenizer_file", None)


def build(model: str, task: str, enc_cfg: dict, num_classes: int, init_from: str | None, lr: float,
          pooling: str = "cls"):
    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.code import BiLSTMConfig, BiLSTMEncoder

    from ..code import CodeClassifierSystem, VarMisusePointerSystem

    if model == "bilstm":
        encoder = BiLSTMEncoder(BiLSTMConfig(vocab_size=enc_cfg["vocab_size"], embedding_size=enc_cfg["hidden_size"],
                                             hidden_size=enc_cfg["hidden_size"], num_layers=2))
    else:
        encoder = TokenEncoder(TokenEncoderConfig(**enc_cfg))
    weights = init_from if model == "pretrained" else None
    if task == "variable_misuse_repair":
        return VarMisusePointerSystem(encoder, init_from=weights, lr=lr)
    return CodeClassifierSystem(encoder, num_classes=num_classes, init_from=weights, lr=lr,
                                pooling="mean" if model == "bilstm" else pooling)


def save_run(system, task: str, dm, folder: Path) -> Path:
    """A fine-tuned system's weights (model.safetensors) and the config.yaml that rebuilds it (the
    shape of a ``tessera fit`` config): ``tasks.runs.load_system(folder)`` reads it back."""
    import yaml
    from safetensors.torch import save_file

    from modalities.code import BiLSTMEncoder

    folder.mkdir(parents=True, exist_ok=True)
    enc = system.encoder
    enc_path = "modalities.code.BiLSTMEncoder" if isinstance(enc, BiLSTMEncoder) else "modalities.TokenEncoder"
    hp = {k: v for k, v in dict(system.hparams).items() if k not in ("encoder", "init_from")}
    cfg = {"model": {"class_path": f"tasks.code.{type(system).__name__}",
                     "init_args": {**hp, "encoder": {"class_path": enc_path,
                                                     "init_args": {"config": _config_dict(enc.config)}}}},
           "data": {"class_path": "tasks.data.code.CodeTaskDataModule",
                    "init_args": {"task": task, "benchmark": str(dm.benchmark), "tokenizer": str(dm.tokenizer_file),
                                  "max_length": dm.max_length, "batch_size": dm.batch_size}}}
    tmp = folder / "model.safetensors.partial"
    save_file({k: v.detach().contiguous().cpu() for k, v in system.state_dict().items()}, str(tmp))
    tmp.replace(folder / "model.safetensors")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def evaluate(tasks, benchmark: Path, tokenizer: Path, init_from: str | None, enc_cfg: dict, out: Path,
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
    (config.yaml) in OUT/<task>/<model>/lr<rate>/, for ``tessera eval code-predict``."""
    import lightning as L

    from ..callbacks import KeepBest, ReleaseHeap
    from ..data.code import CodeTaskDataModule

    for task in tasks:
        if select_by is not None and select_by not in selectable(task):
            raise ValueError(f"select_by={select_by!r} is not a validation metric of {task}; choose one of {selectable(task)}")
    lrs = [lr] if isinstance(lr, int | float) else list(lr)
    lstm_lrs = lrs if bilstm_lr is None else [bilstm_lr] if isinstance(bilstm_lr, int | float) else list(bilstm_lr)
    results: dict = {"settings": {"steps": steps, "batch_size": batch_size, "max_length": max_length,
                                  "max_examples": max_examples, "lr": lrs, "bilstm_lr": lstm_lrs, "init_from": init_from, "seed": seed,
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
            if model == "pretrained" and not init_from:
                continue
            sweep, rates = [], lstm_lrs if model == "bilstm" else lrs
            for rate in rates:
                L.seed_everything(seed, verbose=False)
                system = build(model, task, enc_cfg, dm.num_classes, init_from, rate, pooling)
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


@job("eval", "code", help="fine-tune pretrained vs from-scratch vs BiLSTM on CuBERT tasks (JSON + plot)",
     example="tessera eval code --benchmark cache:code/benchmark-stdlib-tiny --init-from runs/code/mlm-tiny "
             "--tasks variable_misuse --steps 300")
def eval_code(args: argparse.Namespace) -> int:
    """Fine-tune the pretrained encoder (--init-from: an encoder folder or a masked-LM run), the same
    Transformer from scratch and a BiLSTM with the same budget on the same splits of each task and
    report test figures; with several --lr each model keeps the one with the best validation score.
    --merge / --pool-seeds join results.json files of earlier runs instead of training."""
    out = Path(args.out)
    if args.merge or args.pool_seeds:
        files = args.merge or args.pool_seeds
        _existing_files(files, "--merge" if args.merge else "--pool-seeds")
        results = merge(files) if args.merge else pool_seeds(files)
        _write_table(results, out)
        return 0
    if args.benchmark is None:
        raise UserError("--benchmark is required (a folder of `tessera prepare code-benchmark`), unless --merge or --pool-seeds")
    from ..data.fetch import cache_path

    benchmark = cache_path(args.benchmark)
    if not benchmark.is_dir():
        raise FileNotFoundError(f"--benchmark {benchmark} does not exist; build it with "
                                f"`tessera prepare code-benchmark --out {args.benchmark}`")
    for task in args.tasks:
        if not (benchmark / task / "train.jsonl").is_file():
            raise FileNotFoundError(f"--benchmark {benchmark} has no {task}/train.jsonl; build it with "
                                    f"`tessera prepare code-benchmark --out {args.benchmark} --tasks {task}`")
        if args.select_by is not None and args.select_by not in selectable(task):
            raise UserError(f"--select-by {args.select_by} is not a validation metric of {task}; choose one of {selectable(task)}")
    tokenizer = cache_path(args.tokenizer) if args.tokenizer else None
    if args.init_from:
        enc_cfg, own_tok = pretrained_setup(args.init_from)
        tokenizer = tokenizer or own_tok
    else:
        if "pretrained" in args.models and args.models != ["pretrained"]:
            print("no --init-from: the pretrained row is left out")
        enc_cfg = encoder_config(args.config)
    if tokenizer is None or not tokenizer.exists():
        where = f"--init-from {args.init_from} carries no code tokenizer" if args.init_from else f"no code tokenizer ({tokenizer})"
        raise FileNotFoundError(f"{where}; give --tokenizer (a tokenizer or encoder folder), or --init-from an "
                                "encoder folder, which carries its own")
    results = evaluate(args.tasks, benchmark, tokenizer, args.init_from, enc_cfg, out, args.steps,
                       args.batch_size, args.max_length, args.max_examples, args.lr, args.models, args.seed,
                       progress=not args.quiet, precision=args.precision, bilstm_lr=args.bilstm_lr, pooling=args.pooling,
                       val_every=args.val_every, select_by=args.select_by, save_models=args.save_models)
    print_table(results)
    print(f"wrote {out / 'results.json'} and {out / 'results.png'}")
    return 0


@eval_code.arguments
def _(p: argparse.ArgumentParser) -> None:
    from modalities.code import TASKS

    p.add_argument("--benchmark", default=None, help="a benchmark folder (cache:REL is under $TESSERA_CACHE)")
    p.add_argument("--init-from", default=None, help="the pretrained encoder: an encoder folder or a masked-LM run")
    p.add_argument("--tokenizer", default=None, help="code tokenizer (default: the one --init-from carries)")
    p.add_argument("--config", default="configs/code/varmisuse_tiny.yaml",
                   help="without --init-from: a YAML whose encoder config the Transformers use")
    p.add_argument("--tasks", nargs="+", default=["variable_misuse"], choices=TASKS)
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
                        "variable_misuse_repair, accuracy otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each run's tested weights + config.yaml under OUT (for tessera eval code-predict)")
    p.add_argument("--merge", nargs="+", default=None, metavar="RESULTS[:MODEL,...]",
                   help="join these results.json files into --out instead of training; PATH:scratch,bilstm takes "
                        "only those models from PATH")
    p.add_argument("--pool-seeds", nargs="+", default=None, metavar="RESULTS",
                   help="mean and standard deviation over results.json files that differ only in --seed")
    p.add_argument("--out", default="runs/code/eval")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@job("eval", "code-misuse", help="Variable Misuse from a masked LM's own head, no fine-tuning (JSON + plot)",
     example="tessera eval code-misuse --mlm runs/code/mlm-tiny --benchmark cache:code/benchmark-stdlib-tiny")
def eval_code_misuse(args: argparse.Namespace) -> int:
    """Every use of a local variable is masked in turn and the MLM head scores the name written
    there against the function's other locals; thresholds are chosen on the valid split, figures
    reported on test (classification, AUROC; localisation, repair, joint for the repair task)."""
    from ..code_misuse import print_table, run
    from ..data.fetch import cache_path

    benchmark = cache_path(args.benchmark)
    if not benchmark.is_dir():
        raise FileNotFoundError(f"--benchmark {benchmark} does not exist; build it with "
                                f"`tessera prepare code-benchmark --out {args.benchmark}`")
    results = run(benchmark, args.tokenizer and cache_path(args.tokenizer), args.mlm, Path(args.out), args.tasks,
                  args.max_length, args.max_examples, args.batch_size, args.precision, progress=not args.quiet,
                  paired_benchmark=cache_path(args.paired) if args.paired else None, max_pairs=args.max_pairs)
    print_table(results)
    if "paired" in results:
        print("within pairs:", json.dumps(results["paired"]))
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'margins.png'}")
    return 0


@eval_code_misuse.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlm", required=True, help="a masked-LM run (tessera fit --config configs/code/mlm_*.yaml): "
                   "its folder, log folder or a .ckpt in it")
    p.add_argument("--benchmark", required=True, help="a benchmark folder (tessera prepare code-benchmark)")
    p.add_argument("--tokenizer", default=None, help="the encoder's code tokenizer (default: the run's own)")
    p.add_argument("--out", default="runs/code/misuse-mlm")
    p.add_argument("--tasks", nargs="+", default=["variable_misuse", "variable_misuse_repair"],
                   choices=("variable_misuse", "variable_misuse_repair"))
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-examples", type=int, default=None, help="per split, a seeded sample (as tessera eval code)")
    p.add_argument("--batch-size", type=int, default=64, help="masked sequences per forward pass")
    p.add_argument("--precision", choices=("bf16", "32"), default="bf16")
    p.add_argument("--paired", default=None, help="also a benchmark written with --paired: how the bug moves the scores")
    p.add_argument("--max-pairs", type=int, default=400)
    p.add_argument("--quiet", action="store_true")


@job("eval", "code-predict", help="a fine-tuned bug detector over Python files: JSON lines, most suspicious first",
     example="tessera eval code-predict --model runs/code/repair-tiny mypkg/ --out runs/code/preds.jsonl")
def eval_code_predict(args: argparse.Namespace) -> int:
    """Score every function under the given paths with a fine-tuned model (a `tessera fit` run of
    configs/code/varmisuse_tiny.yaml, repair_tiny.yaml, ..., or a run folder `tessera eval code`
    kept): the bug probability, and for variable_misuse_repair also the occurrence the pointer
    suspects and the variable it would put there. Writes one JSON line per function (skipped ones
    last, with the reason) and prints the --top ones. The scores are only as good as the model."""
    from ..code_predict import predict_paths

    return predict_paths(args.model, args.paths, Path(args.out), args.max_chars, args.batch_size, args.top,
                         progress=not args.quiet)


@eval_code_predict.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="Python files or folders (searched for *.py)")
    p.add_argument("--model", required=True, help="a fine-tuned run: its folder, log folder or a checkpoint in it")
    p.add_argument("--out", default="predictions.jsonl", help="JSON lines, most suspicious first")
    p.add_argument("--max-chars", type=int, default=20000, help="functions longer than this are left out")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--quiet", action="store_true")

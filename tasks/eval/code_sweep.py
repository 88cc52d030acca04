"""``tessera eval code``'s training part: every model fine-tuned on every task with the same
budget, the learning rate (and with --val-every the step) chosen on the valid split.

A run's weights and the config.yaml that rebuilds them land in OUT/<task>/<model>/lr<rate>/
(``save_run``; reload with ``tasks.runs.load_system``). Tables, plots and merging results files:
``tasks.eval.code_results``. The command: ``tasks.eval.code``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

from ..jobs import UserError
from .code_results import MODELS, plot, select

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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"--config {path} is not a YAML file ({type(e).__name__}); give a configs/code/*.yaml") from None
    try:
        config = dict(raw["model"]["init_args"]["encoder"]["init_args"]["config"])
    except (KeyError, TypeError):
        raise ValueError(f"{path} has no model.init_args.encoder.init_args.config; give a configs/code/*.yaml") from None
    vocab = ((raw.get("data") or {}).get("init_args") or {}).get("vocab_size")
    if vocab is not None:  # the vocabulary is written once, on the data module (as `tessera fit` reads it)
        config.setdefault("vocab_size", vocab)
    return config


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
        from modalities.hub import read_config

        meta = read_config(path).get("meta") or {}  # a damaged config.json is one error naming it
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
    from ..runs import final_weights

    weights = final_weights(init_from) if init_from else None  # a run's final weights, not a stale last.ckpt
    lrs = [lr] if isinstance(lr, int | float) else list(lr)
    lstm_lrs = lrs if bilstm_lr is None else [bilstm_lr] if isinstance(bilstm_lr, int | float) else list(bilstm_lr)
    results: dict = {"settings": {"steps": steps, "batch_size": batch_size, "max_length": max_length,
                                  "max_examples": max_examples, "lr": lrs, "bilstm_lr": lstm_lrs, "init_from": init_from, "weights": weights, "seed": seed,
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
                system = build(model, task, enc_cfg, dm.num_classes, weights, rate, pooling)
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

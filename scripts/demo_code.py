"""`make demo`'s CuBERT part: tokenise a sample of the standard library, build the benchmark from
its package splits, pretrain a small code encoder briefly (masked LM), fine-tune one task, and
print test accuracy next to the same Transformer from scratch, a BiLSTM and the majority class;
then embed test-split functions with the exported encoder folder and show nearest neighbours.

    python scripts/demo_code.py              # alone; scripts/demo.py calls code_part()
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from code_benchmark import write_benchmark  # scripts/ is on sys.path when a script here runs
from code_corpus import write_corpus
from code_embed import collect, neighbours, same_file_at_1
from code_eval import MODELS, evaluate, headline

from modalities.code import embed_code, load_code_encoder
from tasks.cli import main as tessera

ROOT = Path(__file__).resolve().parents[1]

CONFIG = ROOT / "configs" / "code" / "demo_mlm.yaml"
TASK = "exception_type"


def code_part(out: Path, files: int = 700, pretrain_steps: int = 250, finetune_steps: int = 120,
              models: tuple[str, ...] = ("pretrained", "scratch")) -> dict:
    out = out / "code"
    t0 = time.time()
    corpus = write_corpus(out / "corpus", site_packages=False, max_files=files, progress=False)
    bench = write_benchmark(out / "corpus", out / "benchmark", tasks=[TASK], max_chars=1000)
    t_data = time.time() - t0
    mlm_root = out / "mlm"
    tessera(["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(mlm_root),
             "--data.init_args.corpus", str(out / "corpus"), "--trainer.max_steps", str(pretrain_steps),
             "--trainer.enable_progress_bar", "false", "--data.init_args.cache_dir", str(out / "cache")])
    log = max((mlm_root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    ckpt = log / "checkpoints" / "last.ckpt"
    mlm = json.loads((log / "metrics.json").read_text())["final"]
    t_pre = time.time() - t0 - t_data
    enc_cfg = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["encoder"]["init_args"]["config"]
    data = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    tokenizer = next((out / "cache" / "code" / "mlm").glob(f"corpus-*/tokenizer-{data['vocab_size']}-None"))
    results = evaluate([TASK], out / "benchmark", tokenizer, str(ckpt), enc_cfg, out / "eval", steps=finetune_steps,
                       batch_size=16, max_length=256, max_examples=None, lr=1e-3, models=models)
    embedding = embed_part(log / "encoder", out / "corpus" / "manifest.jsonl")
    return {
        "job": "CuBERT: stdlib sample -> benchmark -> MLM pretraining -> fine-tuning -> embeddings",
        "embedding": embedding,
        "corpus": {s: v for s, v in corpus["splits"].items()},
        "benchmark": bench["tasks"][TASK],
        "pretraining": {"steps": pretrain_steps, "val_loss": round(mlm["val/loss"], 3),
                        "val_accuracy": round(mlm["val/accuracy"], 3), "checkpoint": str(ckpt)},
        "task": TASK, "finetune_steps": finetune_steps, "results": results["tasks"][TASK],
        "seconds": {"data": round(t_data, 1), "pretrain": round(t_pre, 1), "total": round(time.time() - t0, 1)},
        "plot": str(out / "eval" / "results.png"),
    }


def embed_part(encoder_dir: Path, manifest: Path, files: int = 30) -> dict:
    """The fit's exported encoder folder (weights + tokenizer) embeds the functions of some test-split
    files; the share whose nearest neighbour shares their file, and one function's neighbours."""
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
          f"train/valid/test, split by module), {r['seconds']['total']} s")
    print(f"  MLM pretraining {r['pretraining']['steps']} steps: held-out masked-token loss "
          f"{r['pretraining']['val_loss']}, accuracy {r['pretraining']['val_accuracy']}")
    key, vals = headline(r["results"])
    n = r["results"]["data"]["test"]["examples"]
    print(f"  {r['task']} ({r['finetune_steps']} fine-tuning steps, {n} test examples), test {key.split('/')[1]}:")
    for m in (*MODELS, "majority_class"):
        if m in vals:
            print(f"    {m:16} {vals[m]:.3f}")
    print(f"  plot: {r['plot']}")
    e = r["embedding"]
    print(f"  embeddings ({e['encoder']}): {e['functions']} functions of {e['files']} test files, nearest "
          f"neighbour from the same file for {e['same_file_at_1']}; nearest to {e['query']}: {', '.join(e['nearest'])}")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=700, help="stdlib files sampled (evenly)")
    p.add_argument("--pretrain-steps", type=int, default=250)
    p.add_argument("--finetune-steps", type=int, default=120)
    p.add_argument("--models", nargs="+", default=["pretrained", "scratch"], choices=MODELS)
    a = p.parse_args()
    result = code_part(ROOT / "runs" / "demo", a.files, a.pretrain_steps, a.finetune_steps, tuple(a.models))
    (ROOT / "runs" / "demo" / "code" / "summary.json").write_text(json.dumps(result, indent=2))
    print_code(result)

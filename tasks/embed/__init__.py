"""``tessera embed --encoder FOLDER INPUTS...``: vectors from any encoder folder, for its modality.

Writes into ``--out``: ``embeddings.safetensors`` ({"embeddings": (N, D) float32, unit length
unless --no-normalize}), ``index.jsonl`` (row i: the id and details of vector i) and
``summary.json`` (encoder, modality, count, dimension, skipped inputs by reason, seconds).
Units are batched by length; unreadable inputs are skipped and counted; ``--query`` prints the
nearest neighbours of a query (and writes them to ``neighbours.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..jobs import UserError, job
from . import text as _text  # noqa: F401  (registers "text")
from .base import EMBEDDERS, Collected, Embedder, Unit, files_under

__all__ = ["EMBEDDERS", "Collected", "Embedder", "Unit", "embed_units", "files_under", "guess_modality"]

# modality modules beside text; each registers its Embedder on import
MODULES = ("code", "audio", "recsys")


def _load_modalities() -> None:
    import importlib

    for name in MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise


def _has_cubert_vocab(folder: Path) -> bool:
    from modalities.code import find_cubert_vocab

    try:
        find_cubert_vocab(folder)
        return True
    except (FileNotFoundError, ValueError):
        return False


def guess_modality(folder: Path, raw: dict) -> str:
    """The folder's modality: ``meta.modality`` when the exporter wrote it, else from its files."""
    meta = raw.get("meta") or {}
    if meta.get("modality"):
        return meta["modality"]
    arch, model_type = raw.get("architecture"), raw.get("model_type")
    if arch == "audio_encoder" or model_type in ("mert_model", "hubert"):
        return "audio"
    if (folder / "code_tokenizer.json").is_file() or _has_cubert_vocab(folder):
        return "code"
    if (folder / "item_ids.json").is_file():
        return "recsys"
    return "text"


def open_encoder_folder(path: str | Path) -> tuple[Path, dict]:
    """Check that ``path`` is an encoder folder (config.json + weights) before anything loads it."""
    from modalities.hub import WEIGHTS, read_config

    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"encoder folder {folder} does not exist; give the encoder/ folder a `tessera fit` "
                                "run wrote, or one `tessera export` / `tessera import` made")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; --encoder takes a folder (config.json + {WEIGHTS})")
    raw = read_config(folder)
    if not any((folder / w).is_file() for w in (WEIGHTS, "pytorch_model.bin")):
        raise FileNotFoundError(f"{folder} has no {WEIGHTS}; the export was interrupted: run `tessera export` again")
    return folder, raw


@torch.inference_mode()
def embed_units(embedder: Embedder, units: list[Unit], batch_size: int, normalize: bool = True,
                progress: bool = True) -> torch.Tensor:
    """(N, D) float32 in the order of ``units``; batches are formed by length (little padding)."""
    from tqdm import tqdm

    order = sorted(range(len(units)), key=lambda i: units[i].length)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out: torch.Tensor | None = None
    for idx in tqdm(batches, desc="embed", unit="batch", disable=not progress):
        z = embedder.embed([units[i].payload for i in idx]).float().cpu()
        if out is None:
            out = torch.empty(len(units), z.shape[-1])
        out[torch.as_tensor(idx)] = z
    if out is None:
        raise UserError("nothing to embed: every input was skipped")
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


@job(None, "embed", help="vectors from any encoder folder for inputs of its modality (+ nearest neighbours)",
     example="tessera embed --encoder runs/text-tiny/lightning_logs/version_0/encoder notes.txt --out runs/emb")
def embed(args: argparse.Namespace) -> int:
    """Embed inputs with an encoder folder: text lines (.txt files, one unit per non-empty line),
    Python files or folders (one unit per function, or per file with --unit file), audio files or
    folders (one unit per file), item-history files (one unit per user). The modality is the
    folder's own (meta.modality, else guessed from its files); --modality overrides it."""
    from safetensors.torch import save_file

    _load_modalities()
    t0 = time.perf_counter()
    folder, raw = open_encoder_folder(args.encoder)
    modality = args.modality or guess_modality(folder, raw)
    if modality not in EMBEDDERS:
        raise UserError(f"{folder / 'config.json'} says its modality is {modality!r}, which tessera embed does not "
                        f"know; give --modality ({', '.join(EMBEDDERS.names())})")
    embedder = EMBEDDERS.get(modality)(folder, args)
    if not args.inputs:
        raise UserError("no inputs given; name files or folders to embed after the options")
    collected = embedder.collect(args.inputs)
    for reason, n in sorted(collected.skipped.items()):
        print(f"skipped {n} input(s): {reason}")
    if not collected.units:
        raise UserError(f"nothing to embed in {', '.join(args.inputs)}: every input was skipped "
                        f"({dict(collected.skipped)}); are these {modality} inputs?")
    vectors = embed_units(embedder, collected.units, args.batch_size or embedder.batch_size,
                          normalize=not args.no_normalize, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": vectors.contiguous()}, out / "embeddings.safetensors")
    with (out / "index.jsonl").open("w") as f:
        for u in collected.units:
            f.write(json.dumps({"id": u.id, **u.info}) + "\n")
    summary = {"encoder": str(folder), "modality": modality, "count": len(collected.units),
               "dim": int(vectors.shape[1]), "normalized": not args.no_normalize,
               "skipped": dict(collected.skipped), "seconds": round(time.perf_counter() - t0, 2)}
    if args.query:
        q = embed_units(embedder, [Unit("query", embedder.query(args.query), 0)], 1,
                        normalize=not args.no_normalize, progress=False)
        scores = vectors @ q[0]
        top = scores.topk(min(args.top_k, len(scores)))
        hits = [{"id": collected.units[i].id, "score": round(float(s), 4)} for s, i in
                zip(top.values.tolist(), top.indices.tolist(), strict=True)]
        (out / "neighbours.json").write_text(json.dumps({"query": args.query, "neighbours": hits}, indent=1))
        print(f"nearest to {args.query!r}:")
        for h in hits:
            print(f"  {h['score']:.3f}  {h['id']}")
        summary["query"] = args.query
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {len(collected.units)} x {vectors.shape[1]} {modality} embeddings to {out}")
    return 0


@embed.arguments
def _(p: argparse.ArgumentParser) -> None:
    _load_modalities()
    p.add_argument("inputs", nargs="*", help="files or folders of the encoder's modality")
    p.add_argument("--encoder", required=True, help="an encoder folder (config.json + model.safetensors)")
    p.add_argument("--out", default="embeddings", help="output folder (default: ./embeddings)")
    p.add_argument("--modality", choices=EMBEDDERS.names(), help="override the folder's modality")
    p.add_argument("--batch-size", type=int, default=None, help="units per batch (default: the modality's)")
    p.add_argument("--no-normalize", action="store_true", help="keep raw pooled vectors (default: unit length)")
    p.add_argument("--query", help="print the nearest units to this query (text, or a path for code/audio)")
    p.add_argument("--top-k", type=int, default=5, help="neighbours shown for --query")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for name in EMBEDDERS.names():
        EMBEDDERS.get(name).add_arguments(p)

"""Embed Python code with a pretrained code encoder, and find similar functions.

Every function (or, with ``--unit file``, every file) under the given paths becomes one unit-length
vector: [CLS] code [SEP] through the encoder, mean-pooled (``modalities.code.embed_code``). Files
that cannot be read or decoded are skipped and counted; a file that does not parse gives no
functions (counted) and, as a whole file, the lexer's best-effort tokens with its complaint kept.

    python scripts/code_embed.py --encoder runs/code/encoder-small --paths mypkg/ --out runs/code/emb-mypkg
    python scripts/code_embed.py --index runs/code/emb-mypkg --query mypkg/io.py:read_table --top 5

Writes OUT/embeddings.safetensors ("vectors": N x D float32), OUT/index.jsonl (one line per vector:
path, name, line, tokens, truncated, error) and OUT/summary.json: counts, skipped files by reason,
``same_file_at_1`` (the share of functions whose nearest neighbour is from their own file, among
those whose file has another: a label-free check that the vectors carry what the code is about) and
``mean_cosine`` (the mean similarity of two different units: near 1, the vectors crowd into a cone). ``--query`` (a function name, or
PATH:NAME) prints its nearest neighbours by cosine similarity.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from modalities.code import decode_source, embed_code, extract_functions, load_code_encoder


def python_files(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*.py") if f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist; give Python files or folders")
    return out


def collect(paths: list[str], unit: str, max_chars: int) -> tuple[list[str], list[dict], Counter]:
    """(sources, index rows, skipped reasons) for every function or file under ``paths``."""
    sources, rows, skipped = [], [], Counter()
    for f in python_files(paths):
        try:
            text = decode_source(f.read_bytes())
        except OSError as e:
            skipped[f"unreadable ({type(e).__name__})"] += 1
            continue
        except ValueError as e:
            skipped[str(e).split(":")[0]] += 1
            continue
        if unit == "file":
            sources.append(text)
            rows.append({"path": str(f), "name": None, "line": 1})
            continue
        found = list(extract_functions(text, package="", path=str(f), max_chars=max_chars, min_lines=1))
        if not found:
            skipped["no function (or does not parse)"] += 1
        for fn in found:
            sources.append(fn.source)
            rows.append({"path": str(f), "name": fn.name, "line": fn.line})
    return sources, rows, skipped


def find(rows: list[dict], query: str) -> int:
    """The index of the row a query names: NAME, or PATH:NAME (PATH may be a suffix of the stored path)."""
    path, _, name = query.rpartition(":")
    hits = [i for i, r in enumerate(rows) if r["name"] == name and (not path or r["path"].endswith(path))]
    if not hits:
        raise ValueError(f"no embedded function matches {query!r}; give NAME or PATH:NAME as in index.jsonl")
    if len(hits) > 1:
        where = ", ".join(f"{rows[i]['path']}:{rows[i]['line']}" for i in hits[:5])
        raise ValueError(f"{query!r} matches {len(hits)} functions ({where}, ...); qualify it as PATH:NAME")
    return hits[0]


def neighbours(vectors: torch.Tensor, i: int, top: int) -> list[tuple[int, float]]:
    sims = vectors @ vectors[i]
    sims[i] = -float("inf")
    values, idx = sims.topk(min(top, len(sims) - 1))
    return list(zip(idx.tolist(), values.tolist(), strict=True))


def same_file_at_1(vectors: torch.Tensor, rows: list[dict], chunk: int = 4096) -> float | None:
    """Share of the functions, among those whose file has another, whose nearest neighbour (cosine)
    is from the same file: a label-free check that the vectors carry what code is about."""
    files = [r["path"] for r in rows]
    counts = Counter(files)
    hits = total = 0
    for start in range(0, len(rows), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -float("inf")
        for k, j in enumerate(sims.argmax(1).tolist()):
            if counts[files[start + k]] > 1:
                total += 1
                hits += files[j] == files[start + k]
    return round(hits / total, 4) if total else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", help="code encoder folder (scripts/code_export.py, a fit's <log dir>/encoder, or CuBERT)")
    p.add_argument("--paths", nargs="+", help="Python files or folders (searched for *.py)")
    p.add_argument("--out", type=Path, help="where embeddings.safetensors, index.jsonl and summary.json go")
    p.add_argument("--index", type=Path, help="search an OUT folder written before instead of embedding")
    p.add_argument("--unit", choices=("function", "file"), default="function")
    p.add_argument("--max-length", type=int, default=512, help="tokens per unit with [CLS] and [SEP]; longer ones are cut")
    p.add_argument("--max-chars", type=int, default=20000, help="functions longer than this are left out")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=("32", "bf16"), default="bf16", help="bf16: autocast (AVX512-BF16 CPUs, GPUs)")
    p.add_argument("--query", default=None, help="NAME or PATH:NAME: print its nearest neighbours")
    p.add_argument("--top", type=int, default=5)
    a = p.parse_args(argv)
    try:
        if a.index is not None:
            vectors = load_file(str(a.index / "embeddings.safetensors"))["vectors"]
            rows = [json.loads(line) for line in (a.index / "index.jsonl").open()]
        else:
            if not (a.encoder and a.paths and a.out):
                p.error("give --encoder, --paths and --out (or --index to search an existing folder)")
            encoder, tokenizer = load_code_encoder(a.encoder)
            sources, rows, skipped = collect(a.paths, a.unit, a.max_chars)
            if not sources:
                raise ValueError(f"nothing to embed under {a.paths} (skipped: {dict(skipped)})")
            vectors, info = embed_code(encoder, tokenizer, sources, max_length=a.max_length, pooling=a.pooling,
                                       batch_size=a.batch_size, autocast=a.precision == "bf16",
                                       progress=lambda it: tqdm(it, desc="embedding", unit="batch"))
            for r, e in zip(rows, info, strict=True):
                r.update(tokens=e.tokens, truncated=e.truncated, error=e.error)
            a.out.mkdir(parents=True, exist_ok=True)
            save_file({"vectors": vectors.contiguous()}, str(a.out / "embeddings.safetensors"))
            (a.out / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            summary = {"encoder": str(a.encoder), "unit": a.unit, "embedded": len(rows), "dim": vectors.shape[1],
                       "truncated": sum(e.truncated for e in info), "lexer_errors": sum(e.error is not None for e in info),
                       "skipped_files": dict(skipped), "pooling": a.pooling, "max_length": a.max_length,
                       "same_file_at_1": same_file_at_1(vectors, rows) if a.unit == "function" else None,
                       "mean_cosine": round(float((vectors.sum(0).norm() ** 2 - len(rows)) / max(len(rows) * (len(rows) - 1), 1)), 4)}
            (a.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(json.dumps(summary, indent=2))
        if a.query:
            i = find(rows, a.query)
            print(f"nearest to {rows[i]['path']}:{rows[i]['line']} {rows[i]['name']}:")
            for j, s in neighbours(vectors, i, a.top):
                print(f"  {s:.3f}  {rows[j]['path']}:{rows[j]['line']} {rows[j]['name']}")
    except (FileNotFoundError, ValueError) as e:
        print(f"code_embed: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Findings <-> impression retrieval on the OpenI test reports, styled four ways, for any number
of trained text towers next to TF-IDF. Writes retrieval.json and retrieval.png.

    python scripts/eval_cxr_retrieval.py \
        --tower llm2vec=runs/cxr/llm2vec-simcse-tiny/lightning_logs/version_0/encoder \
        --tower bert=runs/cxr/bert-simcse-tiny/lightning_logs/version_0/encoder \
        --out runs/cxr/retrieval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tasks.cxr_eval import (
    folder_encoder,
    mesh_probe,
    retrieval_table,
    test_pairs,
    tfidf_encoder,
    write_report,
)
from tasks.data.cxr import load_reports


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tower", action="append", default=[], metavar="NAME=FOLDER",
                   help="a saved text tower (Tessera / LLM2Vec folder with tokenizer.json); repeatable")
    p.add_argument("--tokenizer", help="tokenizer.json when a tower folder has none")
    p.add_argument("--reports", help="NLMCXR_reports.tgz or a folder of OpenI XML (default: the cached OpenI)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--mesh", action="store_true",
                   help="also MeSH-label classification: linear probe on frozen embeddings, macro AUROC (mesh.json)")
    p.add_argument("--out", default="runs/cxr/retrieval")
    a = p.parse_args(argv)
    reports, read = load_reports(a.reports)
    pairs = test_pairs(reports, a.split)
    encoders = {"tfidf": tfidf_encoder(reports)}
    for spec in a.tower:
        if "=" not in spec:
            p.error(f"--tower {spec!r}: give NAME=FOLDER")
        name, folder = spec.split("=", 1)
        encoders[name] = folder_encoder(folder, a.tokenizer, a.max_length)
    t0 = time.time()
    table = retrieval_table(encoders, pairs)
    result = write_report(table, Path(a.out), {"data": read, "split": a.split, "pairs": len(pairs),
                                               "towers": a.tower, "seconds": round(time.time() - t0, 1)})
    print_table(table)
    print(f"wrote {Path(a.out) / 'retrieval.json'} and retrieval.png")
    if a.mesh:
        mesh = mesh_probe(encoders, reports)
        (Path(a.out) / "mesh.json").write_text(json.dumps(mesh, indent=1))
        print(f"MeSH linear probe, macro AUROC over {len(mesh['labels'])} labels ({mesh['test']} test reports):")
        for name, r in mesh["towers"].items():
            print(f"  {name:<24}{r['macro_auroc']:.3f}")
        result["mesh"] = mesh
    return result


def print_table(table: dict) -> None:
    styles = list(next(iter(table.values())))
    w = max(14, max(len(n) for n in table) + 2)
    print(f"{'tower':<{w}}{'style':<26}{'f2i R@1':>8}{'R@5':>7}{'R@10':>7}{'i2f R@1':>9}{'R@5':>7}{'R@10':>7}")
    for name, rows in table.items():
        for s in styles:
            f, i = rows[s]["f2i"], rows[s]["i2f"]
            print(f"{name:<{w}}{s:<26}{f['recall@1']:>8.3f}{f['recall@5']:>7.3f}{f['recall@10']:>7.3f}"
                  f"{i['recall@1']:>9.3f}{i['recall@5']:>7.3f}{i['recall@10']:>7.3f}")


if __name__ == "__main__":
    main()

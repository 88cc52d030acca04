"""``tessera import SRC DST [--check]``: a foreign pretrained checkpoint -> a Tessera encoder folder."""

from __future__ import annotations

import argparse

from .jobs import job


@job(None, "import", help="convert a pretrained checkpoint folder (HF BERT/RoBERTa, MERT, LLM2Vec, ...)",
     example="tessera import ~/models/all-MiniLM-L6-v2 runs/minilm --check")
def import_checkpoint(args: argparse.Namespace) -> int:
    """Convert a pretrained checkpoint folder (config.json + model.safetensors or pytorch_model.bin,
    read with weights_only=True) into a Tessera encoder folder. The key mapping is strict: every
    source tensor is mapped or dropped with a named reason, printed here."""
    import modalities
    import modalities.hub

    out = modalities.import_checkpoint(args.src, args.dst)
    enc = modalities.load_encoder(out)
    n = sum(p.numel() for p in enc.parameters())
    print(f"wrote {out} ({type(enc).__name__}, {n / 1e6:.2f}M parameters)")
    for key, why in enc.meta.get("dropped", {}).items():
        print(f"  dropped {key}: {why}")
    if args.check:
        diff = modalities.hub.check_parity(args.src, enc)
        verdict = "ok" if diff <= args.atol else "FAILED"
        print(f"parity with the reference implementation: max abs difference {diff:.2e} (atol {args.atol:g}): {verdict}")
        return 0 if diff <= args.atol else 1
    return 0


@import_checkpoint.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="source folder (config.json + model.safetensors or pytorch_model.bin)")
    p.add_argument("dst", help="destination folder (created)")
    p.add_argument("--check", action="store_true",
                   help="compare every hidden state with the reference implementation (transformers) on a test batch")
    p.add_argument("--atol", type=float, default=1e-4, help="--check fails above this max abs difference (fp32)")

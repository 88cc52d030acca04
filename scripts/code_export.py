"""A code masked-LM checkpoint -> a code encoder folder (encoder weights in safetensors + its tokenizer).

``tessera fit --config configs/code/mlm_*.yaml`` writes ``<log dir>/encoder`` itself at the end of
fit (``tasks.callbacks.ExportEncoder``); this script does the same for any saved checkpoint, e.g. a
mid-run one. The encoder shape comes from the pretraining YAML, the tokenizer from ``--tokenizer``
or, by default, from the YAML's data section (the tokenizer that run trained and cached).

    python scripts/code_export.py --ckpt runs/code/mlm-small/lightning_logs/version_0/checkpoints/last.ckpt \
        --config configs/code/mlm_small.yaml --out runs/code/encoder-small

``--untrained`` writes the same encoder at initialisation instead (the baseline an embedding check
compares with). Load it with ``modalities.code.load_code_encoder(OUT)``; embed code with ``scripts/code_embed.py``;
fine-tune from it with ``scripts/code_eval.py --pretrained OUT``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import load_code_tokenizer, save_code_encoder
from tasks.code import encoder_config, load_pretrained_encoder
from tasks.data.code import MaskedCodeDataModule, resolve


def config_tokenizer(config_yaml: str | Path) -> Path:
    """The tokenizer a pretraining YAML's data module uses (given, or the one it trains and caches)."""
    raw = yaml.safe_load(Path(config_yaml).read_text())
    data = (raw.get("data") or {}).get("init_args") or {}
    return MaskedCodeDataModule(**data).tokenizer_file


def export(ckpt: str | Path | None, config_yaml: str | Path, out: str | Path, tokenizer: str | Path | None = None,
           seed: int = 0) -> Path:
    """``ckpt`` None: the config's encoder untrained (seeded), a baseline for embedding checks."""
    tok_path = resolve(tokenizer) if tokenizer is not None else config_tokenizer(config_yaml)
    if not tok_path.exists():
        raise FileNotFoundError(f"no tokenizer at {tok_path}; pass --tokenizer (the folder the pretraining run used)")
    torch.manual_seed(seed)
    encoder = TokenEncoder(TokenEncoderConfig(**encoder_config(config_yaml)))
    meta = {"source": str(ckpt) if ckpt else f"untrained (seed {seed})", "config": str(config_yaml)}
    if ckpt is not None:
        meta["keys"] = load_pretrained_encoder(encoder, ckpt)["keys"]
    return save_code_encoder(encoder, load_code_tokenizer(tok_path), out, meta=meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a MaskedLMSystem checkpoint (.ckpt, read with weights_only=True)")
    src.add_argument("--untrained", action="store_true", help="the config's encoder at initialisation (a baseline)")
    p.add_argument("--config", required=True, help="the pretraining YAML (configs/code/mlm_*.yaml) the run used")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one the YAML's data section names)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0, help="initialisation seed with --untrained")
    a = p.parse_args(argv)
    try:
        out = export(a.ckpt, a.config, a.out, a.tokenizer, a.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"code_export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (encoder + tokenizer); load with modalities.code.load_code_encoder('{out}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``tessera`` command: LightningCLI's fit/validate/test/predict, plus ``import``.

    tessera fit --config configs/mlm/tiny.yaml
    tessera fit --config configs/mlm/tiny.yaml --ckpt_path last     # resume
    tessera import path/to/hf-bert-folder path/to/tessera-folder
"""

from __future__ import annotations

import argparse
import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI

import modalities


class TesseraCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True):
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )


def import_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="tessera import",
        description="Convert a pretrained checkpoint folder (HF BERT/RoBERTa, ...) into a Tessera "
        "checkpoint folder (config.json + model.safetensors). Key mapping is strict.",
    )
    p.add_argument("src", help="source folder (config.json + model.safetensors or pytorch_model.bin)")
    p.add_argument("dst", help="destination folder")
    a = p.parse_args(argv)
    try:
        out = modalities.import_checkpoint(a.src, a.dst)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"tessera import: error: {e}", file=sys.stderr)
        return 2
    enc = modalities.load_encoder(out)
    n = sum(p.numel() for p in enc.parameters())
    dropped = enc.meta.get("dropped", {})
    print(f"wrote {out} ({type(enc).__name__}, {n / 1e6:.2f}M parameters)")
    for key, why in dropped.items():
        print(f"  dropped {key}: {why}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "import":
        return import_main(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print("tessera import SRC DST   convert a pretrained checkpoint (see `tessera import -h`)\n")
    TesseraCLI(args=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

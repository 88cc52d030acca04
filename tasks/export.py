"""A trained system -> an encoder folder; ``tessera export CKPT_OR_RUN OUT``.

The encoder folder is the one way out of a run: ``config.json`` + ``model.safetensors`` (read by
``modalities.load_encoder``) plus what the modality needs to use it (the tokenizer, the item-id
map, feature settings), and ``meta.modality`` so that ``tessera embed`` knows its inputs.

A system may define ``export_encoder(folder, **meta) -> Path`` (what to write); otherwise its
``tower`` or ``encoder`` attribute is written. A data module may define
``write_encoder_assets(folder)`` (what a user of the encoder needs from the data side) and
``modality`` (a name such as "text", "code", "audio", "recsys", "cxr").
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from .jobs import UserError, job


def export_encoder(system, folder: str | Path, datamodule=None, **meta) -> Path:
    """Write ``system``'s encoder and ``datamodule``'s assets into ``folder``; returns it."""
    folder = Path(folder)
    modality = getattr(datamodule, "modality", None)
    if modality is not None:
        meta.setdefault("modality", modality)
    if hasattr(system, "export_encoder"):
        out = Path(system.export_encoder(folder, **meta))
    else:
        from .callbacks import export_tower  # the shared writer for `encoder` / `tower` modules

        module = getattr(system, "tower", None) or getattr(system, "encoder", None)
        if module is None:
            raise UserError(f"{type(system).__name__} has no `encoder` or `tower` to export and no export_encoder()")
        out = export_tower(module, folder, **meta)
    if datamodule is not None and hasattr(datamodule, "write_encoder_assets"):
        datamodule.write_encoder_assets(out)
    else:
        _copy_tokenizer(getattr(datamodule, "tokenizer_file", None), out)
    return out


def _copy_tokenizer(tok, folder: Path) -> None:
    if tok is None:
        return
    tok = Path(tok)
    if tok.is_file():  # one tokenizer.json (text)
        shutil.copy2(tok, folder / "tokenizer.json")
    elif tok.is_dir():  # a tokenizer folder (code: tokenizer.json + code_tokenizer.json)
        for f in tok.iterdir():
            if f.is_file() and not (folder / f.name).exists():
                shutil.copy2(f, folder / f.name)


@job(None, "export", help="a checkpoint or run folder -> an encoder folder (config.json + model.safetensors)",
     example="tessera export runs/mlm-tiny/lightning_logs/version_0 runs/mlm-tiny/encoder")
def export(args: argparse.Namespace) -> int:
    """Write the encoder of a trained run (its config.yaml rebuilds the system; the checkpoint,
    read with weights_only=True, gives the weights) as an encoder folder that `tessera embed`,
    `tessera eval` and every `init_from` take."""
    from .runs import checkpoint_of, load_system

    system, data, _ = load_system(args.src, with_data=True)
    out = export_encoder(system, args.out, datamodule=data, source=str(checkpoint_of(args.src)))
    print(f"wrote {out}")
    return 0


@export.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a run folder (default_root_dir), its lightning_logs/version_N, or a .ckpt in it")
    p.add_argument("out", help="the encoder folder to write")

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
        from modalities.hub import save_encoder

        module = getattr(system, "tower", None) or getattr(system, "encoder", None)
        if module is None:
            raise UserError(f"{type(system).__name__} has no `encoder` or `tower` to export and no export_encoder()")
        out = save_encoder(module, folder, meta=meta)
    if datamodule is not None and hasattr(datamodule, "write_encoder_assets"):
        datamodule.write_encoder_assets(out)
    return out


@job(None, "export", help="a checkpoint or run folder -> an encoder folder (config.json + model.safetensors)",
     example="tessera export runs/text-tiny runs/text-tiny/st --format sentence-transformers")
def export(args: argparse.Namespace) -> int:
    """Write the encoder of a trained run (its config.yaml rebuilds the system; the checkpoint,
    read with weights_only=True, gives the weights) as an encoder folder that `tessera embed`,
    `tessera eval` and every `init_from` take; or any encoder folder (ours or a foreign one that
    load_encoder reads) in a peer library's format: --format hf (transformers' AutoModel),
    sentence-transformers (SentenceTransformer(folder).encode), or any other registered exporter
    (``modalities.exporting.register_exporter``)."""
    import tempfile

    from .runs import checkpoint_of, load_system

    src, out = Path(args.src).expanduser(), Path(args.out)
    is_encoder_folder = src.is_dir() and (src / "config.json").is_file()
    with tempfile.TemporaryDirectory() as tmp:
        if is_encoder_folder:
            folder = src
        else:
            system, data, _ = load_system(src, with_data=True)
            target = out if args.format == "tessera" else Path(tmp) / "encoder"
            folder = export_encoder(system, target, datamodule=data, source=str(checkpoint_of(src)))
        if args.format == "tessera":
            if is_encoder_folder:
                from modalities import load_encoder, save_encoder

                enc = load_encoder(folder)
                save_encoder(enc, out, meta=getattr(enc, "meta", {}))
                for f in folder.iterdir():  # the assets beside the weights (tokenizer, item-id map, ...)
                    if f.is_file() and f.name not in ("config.json", "model.safetensors", "pytorch_model.bin"):
                        shutil.copy2(f, out / f.name)
        else:
            from modalities.exporting import export_folder

            export_folder(folder, out, args.format, max_seq_length=args.max_seq_length)
    print(f"wrote {out} ({args.format})")
    return 0


@export.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a run folder (default_root_dir), its lightning_logs/version_N, or a .ckpt in it")
    p.add_argument("out", help="the folder to write")
    import modalities  # noqa: F401  (registers every model family's exporters)
    from modalities.exporting import EXPORT_HELP, EXPORTERS

    formats = ["tessera", *EXPORTERS.names()]
    described = "; ".join(f"{name}: {EXPORT_HELP[name]}" for name in EXPORTERS.names())
    p.add_argument("--format", choices=formats, default="tessera",
                   help=f"tessera (default): an encoder folder; {described}")
    p.add_argument("--max-seq-length", type=int, default=256, help="sentence-transformers: its max_seq_length")

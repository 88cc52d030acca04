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


FORMATS = ("tessera", "hf", "sentence-transformers")
ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}


def write_hf_folder(encoder_folder: Path, out: Path) -> Path:
    """A BERT-shaped encoder folder -> an HF BertModel / RobertaModel folder (config.json +
    model.safetensors + its tokenizer) that ``transformers.AutoModel.from_pretrained`` loads."""
    import json

    from safetensors.torch import save_file

    from modalities import load_encoder
    from modalities.backbone.hf_bert import to_hf

    encoder = load_encoder(encoder_folder)
    if type(encoder).__name__ != "TokenEncoder":
        raise UserError(f"{encoder_folder} holds a {type(encoder).__name__}; --format hf covers BERT-shaped token "
                        "encoders (text, code, cxr BERT towers)")
    hf, state = to_hf(encoder)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "tokenizer_config.json", "merges.txt",
                 "vocab.json"):
        if (encoder_folder / name).is_file():
            shutil.copy2(encoder_folder / name, out / name)
    if (out / "tokenizer.json").is_file() and not (out / "tokenizer_config.json").is_file():
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": encoder.config.max_position_embeddings,
            "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "mask_token": "[MASK]"}, indent=2) + "\n")
    return out


def write_sentence_transformers_folder(encoder_folder: Path, out: Path, max_seq_length: int = 256) -> Path:
    """An HF folder plus sentence-transformers' modules (Transformer -> Pooling -> Normalize), pooled
    as the encoder's metadata says: ``SentenceTransformer(out).encode`` gives what `tessera embed` gives."""
    import json

    from modalities.hub import read_config

    pooling = (read_config(encoder_folder).get("meta") or {}).get("pooling", "mean")
    if pooling not in ST_POOLING:
        raise UserError(f"{encoder_folder} pools by {pooling!r}; sentence-transformers' Pooling covers {sorted(ST_POOLING)}")
    write_hf_folder(encoder_folder, out)
    if not (out / "tokenizer.json").is_file():
        raise UserError(f"{encoder_folder} has no tokenizer.json; a sentence-transformers folder needs its tokenizer")
    hidden = json.loads((out / "config.json").read_text())["hidden_size"]
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}, indent=2) + "\n")
    (out / "1_Pooling").mkdir(exist_ok=True)
    pool = {"word_embedding_dimension": hidden, **{flag: name == pooling for name, flag in ST_POOLING.items()}}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2) + "\n")
    (out / "2_Normalize").mkdir(exist_ok=True)
    return out


@job(None, "export", help="a checkpoint or run folder -> an encoder folder (config.json + model.safetensors)",
     example="tessera export runs/text-tiny runs/text-tiny/st --format sentence-transformers")
def export(args: argparse.Namespace) -> int:
    """Write the encoder of a trained run (its config.yaml rebuilds the system; the checkpoint,
    read with weights_only=True, gives the weights) as an encoder folder that `tessera embed`,
    `tessera eval` and every `init_from` take; or any encoder folder (ours or a foreign one that
    load_encoder reads) in a peer library's format: --format hf (transformers' AutoModel) or
    sentence-transformers (SentenceTransformer(folder).encode)."""
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
        elif args.format == "hf":
            write_hf_folder(folder, out)
        else:
            write_sentence_transformers_folder(folder, out, args.max_seq_length)
    print(f"wrote {out} ({args.format})")
    return 0


@export.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a run folder (default_root_dir), its lightning_logs/version_N, or a .ckpt in it")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--format", choices=FORMATS, default="tessera",
                   help="tessera (default): an encoder folder; hf: a transformers BertModel/RobertaModel folder; "
                        "sentence-transformers: that plus Pooling + Normalize modules")
    p.add_argument("--max-seq-length", type=int, default=256, help="sentence-transformers: its max_seq_length")

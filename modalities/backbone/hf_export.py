"""Tessera encoder folders -> transformers and sentence-transformers folders (the reverse of
``hf_bert``'s importers): ``tessera export SRC OUT --format hf|sentence-transformers``."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from safetensors.torch import save_file

from ..exporting import register_exporter
from ..hub import load_encoder, read_config
from .config import TokenEncoderConfig
from .encoder import TokenEncoder
from .hf_bert import to_hf


def _bert_body(encoder: TokenEncoder, folder: Path) -> TokenEncoder:
    """The plain TokenEncoder inside a subclass that adds a head (CXR-BERT's projection): BertModel
    holds the body only, so the head's weights are left out, and the user is told which."""
    if type(encoder) is TokenEncoder:
        return encoder
    body = TokenEncoder(TokenEncoderConfig(**{f.name: getattr(encoder.config, f.name)
                                             for f in fields(TokenEncoderConfig)}))
    missing, extra = body.load_state_dict(encoder.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{folder} holds a {type(encoder).__name__} without a full BERT body (missing {missing[:3]})")
    heads = sorted({k.split(".")[0] for k in extra})
    print(f"{folder}: BertModel has no place for {type(encoder).__name__}'s {', '.join(heads)} "
          f"({len(extra)} tensors); exported the BERT body without it", file=sys.stderr)
    return body


ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}


@register_exporter("hf", help="a transformers BertModel / RobertaModel folder (AutoModel.from_pretrained)")
def write_hf_folder(encoder_folder: Path, out: Path, **options) -> Path:
    """A BERT-shaped encoder folder -> an HF BertModel / RobertaModel folder (config.json +
    model.safetensors + its tokenizer) that ``transformers.AutoModel.from_pretrained`` loads."""
    encoder = load_encoder(encoder_folder)
    if not isinstance(encoder, TokenEncoder):
        raise ValueError(f"{encoder_folder} holds a {type(encoder).__name__}; --format hf covers BERT-shaped token "
                         "encoders (text, code, cxr BERT towers)")
    hf, state = to_hf(_bert_body(encoder, encoder_folder))
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


@register_exporter("sentence-transformers", help="the hf folder plus Pooling + Normalize modules (SentenceTransformer)")
def write_sentence_transformers_folder(encoder_folder: Path, out: Path, max_seq_length: int = 256,
                                       **options) -> Path:
    """An HF folder plus sentence-transformers' modules (Transformer -> Pooling -> Normalize), pooled
    as the encoder's metadata says: ``SentenceTransformer(out).encode`` gives what `tessera embed` gives."""
    pooling = (read_config(encoder_folder).get("meta") or {}).get("pooling", "mean")
    if pooling not in ST_POOLING:
        raise ValueError(f"{encoder_folder} pools by {pooling!r}; sentence-transformers' Pooling covers {sorted(ST_POOLING)}")
    write_hf_folder(encoder_folder, out)
    if not (out / "tokenizer.json").is_file():
        raise ValueError(f"{encoder_folder} has no tokenizer.json; a sentence-transformers folder needs its tokenizer")
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

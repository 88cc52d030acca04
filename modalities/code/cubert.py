"""CuBERT checkpoints: the released TF checkpoints converted to HF BERT format (config.json with
``model_type: "bert"`` + model.safetensors / pytorch_model.bin) load through
``modalities.load_encoder`` (the HF BERT importer: rename table, strict, dropped keys named);
this module pairs such a folder with CuBERT's own vocabulary file (tensor2tensor
``SubwordTextEncoder`` format: one quoted subtoken per line).

    encoder, tokenizer = load_cubert("path/to/cubert-hf-folder")     # vocab found in the folder
    enc = tokenizer.encode(source)
    out = encoder(input_ids=torch.tensor([[tokenizer.cls_id, *enc.ids, tokenizer.sep_id]]))
"""

from __future__ import annotations

from pathlib import Path

from ..hub import load_encoder
from .tokenizer import CodeTokenizer, CubertVocab


def find_cubert_vocab(folder: str | Path) -> Path:
    """The CuBERT vocabulary file in a folder: a *vocab*.txt whose first line is a quoted subtoken."""
    folder = Path(folder)
    for path in sorted(folder.glob("*vocab*.txt")):
        first = path.open(encoding="utf-8", errors="replace").readline().rstrip("\r\n")
        if len(first) >= 2 and first[0] == first[-1] and first[0] in "'\"":
            return path
    raise FileNotFoundError(
        f"{folder} holds no CuBERT vocabulary (a *vocab*.txt with one quoted subtoken per line); "
        "pass vocab= explicitly"
    )


def load_cubert(folder: str | Path, vocab: str | Path | None = None, attention_backend: str | None = None):
    """(encoder, CodeTokenizer) from an HF-BERT-format CuBERT folder and its vocabulary file."""
    encoder = load_encoder(folder, attention_backend=attention_backend)
    tokenizer = CodeTokenizer(CubertVocab.from_file(vocab if vocab is not None else find_cubert_vocab(folder)))
    if tokenizer.vocab_size > encoder.config.vocab_size:
        raise ValueError(
            f"the CuBERT vocabulary has {tokenizer.vocab_size} subtokens but the checkpoint's embedding has "
            f"{encoder.config.vocab_size} rows; pair the checkpoint with the vocabulary it was trained with"
        )
    encoder.meta = {**getattr(encoder, "meta", {}), "tokenizer": "cubert", "vocab": str(tokenizer.vocab.size)}
    return encoder, tokenizer

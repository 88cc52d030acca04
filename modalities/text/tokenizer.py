"""A BERT-style WordPiece tokenizer trained with HF ``tokenizers`` on the corpus at hand."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in this order


def train_wordpiece(texts: Iterable[str], vocab_size: int, path: str | Path | None = None) -> Tokenizer:
    """Uncased WordPiece as BERT's; [CLS] text [SEP] added on encode. Saved to ``path`` if given."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    if path is not None:  # written whole then renamed: a reader (another DDP rank) never sees half a file
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        tok.save(str(partial))
        partial.replace(path)
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json file, or a folder holding one (HF model folders do)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}; give a tokenizer.json or a folder with one")
    tok = Tokenizer.from_file(str(path))
    # HF folders often save padding to a fixed length (all-MiniLM-L6-v2: 128) and truncation in the
    # file; the callers pad batches and cut to their max_length themselves, and a padded id that a
    # caller counts as a real token would be pooled as one
    tok.no_padding()
    tok.no_truncation()
    for special in ("[PAD]", "[MASK]"):
        if tok.token_to_id(special) is None:
            raise ValueError(f"tokenizer {path} has no {special} token; masked-LM training needs [PAD] and [MASK]")
    return tok

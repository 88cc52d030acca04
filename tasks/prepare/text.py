"""``tessera prepare text``: the masked-LM corpus, WordPiece tokenizer and token ids into the cache.

``MaskedTextDataModule.prepare_data`` builds the same files on first use (``tessera fit`` needs no
step before it); this job builds them ahead of time (before a multi-process or offline run) and
prints where they are and what the corpus holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..jobs import job


@job("prepare", "text", help="masked-LM corpus (stdlib docstrings or your .txt) + WordPiece tokenizer into the cache",
     example="tessera prepare text --vocab-size 4096")
def prepare_text(args: argparse.Namespace) -> int:
    """Extract the corpus (every docstring of this Python's standard library, or the documents of
    --corpus: a .txt file or folder of .txt files, documents separated by blank lines), train an
    uncased WordPiece of --vocab-size on its training split and tokenise it; the text configs
    (configs/text/*.yaml) then find everything in the cache."""
    from ..data.text import STDLIB, MaskedTextDataModule

    if args.corpus != STDLIB:
        src = Path(args.corpus).expanduser()
        if not src.exists():
            raise FileNotFoundError(f"--corpus {src} does not exist; give a .txt file, a folder of .txt files, "
                                    f"or {STDLIB!r}")
        if src.is_dir() and not any(src.rglob("*.txt")):
            raise ValueError(f"--corpus {src} holds no .txt files; give a folder of .txt documents")
    dm = MaskedTextDataModule(corpus=args.corpus, vocab_size=args.vocab_size, max_length=args.max_length,
                              val_fraction=args.val_fraction, cache_dir=args.cache)
    dm.prepare_data()
    dm.setup("fit")
    print(f"corpus:    {dm.documents_file}")
    print(f"tokenizer: {dm.tokenizer_file}")
    print(json.dumps(dm.stats))
    return 0


@prepare_text.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="stdlib-docstrings",
                   help="'stdlib-docstrings' (default) or a .txt file / folder of .txt files")
    p.add_argument("--vocab-size", type=int, default=8192, help="WordPiece vocabulary (configs/text/tiny.yaml: 4096)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per document, as the config's data.max_length")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of files held out, as data.val_fraction")
    p.add_argument("--cache", default=None, help="cache folder (default: $TESSERA_CACHE or ~/.cache/tessera)")

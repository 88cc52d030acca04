"""Plain text for token encoders: offline corpora and a trainable WordPiece tokenizer."""

from .corpus import CorpusStats, python_docstrings, read_documents
from .tokenizer import SPECIAL_TOKENS, load_tokenizer, train_wordpiece

__all__ = ["CorpusStats", "SPECIAL_TOKENS", "load_tokenizer", "python_docstrings", "read_documents", "train_wordpiece"]

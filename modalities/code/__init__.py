"""Python source code (CuBERT): lexer, subword tokenizer, corpus, benchmark generator, BiLSTM baseline,
encoder folders (encoder + tokenizer) and code embeddings."""

from .benchmark import (
    HOLE,
    TASKS,
    Function,
    exception_vocabulary,
    extract_functions,
    generate,
    local_variables,
)
from .cubert import find_cubert_vocab, load_cubert
from .embed import Embedded, embed_code, load_code_encoder, save_code_encoder
from .lexer import DEDENT, NEWLINE, NL, TYPE_TOKENS, Lexed, Lexeme, decode_source, lex
from .lstm import BiLSTMConfig, BiLSTMEncoder
from .tokenizer import CodeEncoding, CodeTokenizer, CubertVocab, WordPieceVocab, load_code_tokenizer

__all__ = [
    "DEDENT", "HOLE", "NEWLINE", "NL", "TASKS", "TYPE_TOKENS", "BiLSTMConfig", "BiLSTMEncoder", "CodeEncoding",
    "CodeTokenizer", "CubertVocab", "Embedded", "Function", "Lexed", "Lexeme", "WordPieceVocab", "decode_source",
    "embed_code", "exception_vocabulary", "extract_functions", "find_cubert_vocab", "generate", "lex", "load_code_tokenizer",
    "load_code_encoder", "load_cubert", "local_variables", "save_code_encoder",
]

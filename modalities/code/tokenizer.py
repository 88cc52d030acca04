"""Code tokenizer = the lexer (``lexer.py``) + a subword vocabulary, every subword with its source span.

Two vocabularies:
- ``WordPieceVocab``: trained here on the corpus with HF ``tokenizers`` (WordPiece, cased, no
  normaliser: code is case-sensitive), saved as a ``tokenizer.json``;
- ``CubertVocab``: CuBERT's own format (tensor2tensor ``SubwordTextEncoder``; one quoted subtoken
  per line, ``_`` ends a token, ``\\u`` escapes an underscore), encoded greedily longest-first as
  tensor2tensor does.

Long lexemes (strings, identifiers past ``max_chunk`` characters) are cut into chunks before
subwording: runs of word characters (at most ``max_chunk``), runs of whitespace, single other
characters. Each chunk is a "word" for the vocabulary, so subword spans are exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, trainers

from .lexer import TYPE_TOKENS, Lexed, Lexeme, lex, no_gc

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 of a trained vocabulary
META_FILE = "code_tokenizer.json"


@dataclass
class CodeEncoding:
    """Subword ids of one source, each with the character span of the code it came from."""

    ids: np.ndarray  # (N,) int64 subword ids
    spans: np.ndarray  # (N, 2) int64 [start, end) character offsets into ``source``
    lexeme: np.ndarray  # (N,) int64 index into ``lexemes`` of the lexeme each subword belongs to
    lexemes: list[Lexeme]
    source: str
    error: str | None = None  # the lexer's complaint (see lexer.lex); None when clean
    partial: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def token_at(self, char_offset: int) -> int:
        """Index of the first subword whose span starts at or covers ``char_offset`` (-1: none)."""
        hit = np.nonzero((self.spans[:, 0] <= char_offset) & (char_offset < np.maximum(self.spans[:, 1], self.spans[:, 0] + 1)))[0]
        return int(hit[0]) if len(hit) else -1


class WordPieceVocab:
    """HF WordPiece over chunk "words" (no normaliser, no pre-tokeniser: each chunk is one word)."""

    kind = "wordpiece"

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self._whole: dict[str, int] | None = None  # whole-word vocabulary entries, built on first use
        missing = [t for t in (*SPECIAL_TOKENS, *TYPE_TOKENS) if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"code vocabulary lacks {missing}; train it with CodeTokenizer.train")

    @classmethod
    def train(cls, words: Iterable[list[str]], vocab_size: int) -> WordPieceVocab:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=1000))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *TYPE_TOKENS], min_frequency=2,
            show_progress=False,
        )
        tok.train_from_iterator(words, trainer=trainer)  # batches of words; each word is one unit
        return cls(tok)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.tok.id_to_token(i)

    @property
    def size(self) -> int:
        return self.tok.get_vocab_size()

    def encode_words(self, batch: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per word list: ids (N,), the word of each id (N,), offsets inside the word (N, 2).

        A word that is itself in the vocabulary is one id (WordPiece's longest match from the
        start is the whole word), looked up here; only the other words go through HF."""
        if self._whole is None:
            self._whole = {t: i for t, i in self.tok.get_vocab().items() if not t.startswith("##")}
        get = self._whole.get
        out = []
        for words in batch:
            n = len(words)
            wid_ids = [get(w, -1) for w in words]
            lengths = np.fromiter(map(len, words), dtype=np.int64, count=n)
            word_ids = np.asarray(wid_ids, dtype=np.int64)
            miss = np.nonzero(word_ids < 0)[0]
            if not len(miss):
                off = np.stack([np.zeros(n, dtype=np.int64), lengths], axis=1)
                out.append((word_ids, np.arange(n, dtype=np.int64), off))
                continue
            enc = self.tok.encode([words[k] for k in miss.tolist()], is_pretokenized=True, add_special_tokens=False)
            m_word = np.asarray(enc.word_ids, dtype=np.int64)  # index into miss of each subword
            counts = np.ones(n, dtype=np.int64)
            counts[miss] = np.bincount(m_word, minlength=len(miss))
            wid = np.repeat(np.arange(n, dtype=np.int64), counts)  # (N,)
            hit = word_ids[wid] >= 0
            ids = np.where(hit, word_ids[wid], 0)
            ids[~hit] = enc.ids
            off = np.zeros((len(wid), 2), dtype=np.int64)
            off[hit, 1] = lengths[wid[hit]]
            off[~hit] = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            out.append((ids, wid, off))
        return out

    def save(self, folder: Path) -> None:
        self.tok.save(str(folder / "tokenizer.json"))


_T2T_UNESCAPE = re.compile(r"\\u|\\\\|\\([0-9]+);")


class CubertVocab:
    """CuBERT's SubwordTextEncoder vocabulary: one quoted subtoken per line; id = line number."""

    kind = "cubert"
    # CuBERT's reserved tokens, with the names this project uses for them
    ALIASES = {
        "[PAD]": ("<pad>_", "<pad>", "[PAD]_", "[PAD]"),
        "[UNK]": ("[UNK]_", "[UNK]", "<unk>_"),
        "[CLS]": ("[CLS]_", "[CLS]"),
        "[SEP]": ("[SEP]_", "[SEP]"),
        "[MASK]": ("[MASK]_", "[MASK]"),
    }

    def __init__(self, subtokens: Sequence[str], path: str = "<memory>"):
        self.subtokens = list(subtokens)
        self.index = {s: i for i, s in enumerate(self.subtokens)}
        if len(self.index) != len(self.subtokens):
            raise ValueError(f"CuBERT vocabulary {path} holds duplicate subtokens")
        self.alphabet = {c for s in self.subtokens for c in s}
        self.max_len = max(len(s) for s in self.subtokens)
        self.special = {}
        for name, candidates in self.ALIASES.items():
            found = next((self.index[c] for c in candidates if c in self.index), None)
            if found is None:
                raise ValueError(f"CuBERT vocabulary {path} has none of {candidates} (needed for {name})")
            self.special[name] = found

    @classmethod
    def from_file(cls, path: str | Path) -> CubertVocab:
        path = Path(path)
        subtokens = []
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.rstrip("\r")
            if len(line) < 2 or line[0] != line[-1] or line[0] not in "'\"":
                raise ValueError(
                    f"{path}:{n}: {line[:40]!r} is not a quoted subtoken; a CuBERT vocabulary has one "
                    "quoted token per line, e.g. 'def_'"
                )
            subtokens.append(line[1:-1])
        if not subtokens:
            raise ValueError(f"CuBERT vocabulary {path} is empty")
        return cls(subtokens, str(path))

    def token_to_id(self, token: str) -> int | None:
        if token in self.special:
            return self.special[token]
        return self.index.get(token + "_", self.index.get(token))

    def id_to_token(self, i: int) -> str | None:
        return self.subtokens[i] if 0 <= i < len(self.subtokens) else None

    @property
    def size(self) -> int:
        return len(self.subtokens)

    def _escape(self, word: str) -> tuple[str, list[int]]:
        """tensor2tensor's escaping, plus the source character of every escaped character."""
        parts, origin = [], []
        for k, c in enumerate(word):
            if c == "_":
                e = "\\u"
            elif c == "\\":
                e = "\\\\"
            elif c in self.alphabet and c != "\n":
                e = c
            else:
                e = f"\\{ord(c)};"
            parts.append(e)
            origin.extend([k] * len(e))
        parts.append("_")  # end of token
        origin.append(len(word))
        return "".join(parts), origin

    def encode_word(self, word: str) -> tuple[list[int], list[tuple[int, int]]]:
        if word in TYPE_TOKENS and word + "_" in self.index:
            return [self.index[word + "_"]], [(0, len(word))]
        esc, origin = self._escape(word)
        ids, offsets, i = [], [], 0
        while i < len(esc):
            for j in range(min(len(esc), i + self.max_len), i, -1):
                sub = esc[i:j]
                if sub in self.index:
                    ids.append(self.index[sub])
                    lo, hi = origin[i], origin[j - 1] + 1
                    offsets.append((min(lo, len(word)), min(max(hi, lo), len(word))))
                    i = j
                    break
            else:  # a character no subtoken starts with
                ids.append(self.special["[UNK]"])
                offsets.append((min(origin[i], len(word)), min(origin[i] + 1, len(word))))
                i += 1
        return ids, offsets

    def encode_words(self, batch: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for words in batch:
            ids, wids, offs = [], [], []
            for w, word in enumerate(words):
                i, o = self.encode_word(word)
                ids += i
                offs += o
                wids += [w] * len(i)
            out.append((np.asarray(ids, dtype=np.int64), np.asarray(wids, dtype=np.int64),
                        np.asarray(offs, dtype=np.int64).reshape(-1, 2)))
        return out

    def save(self, folder: Path) -> None:
        (folder / "vocab.txt").write_text("".join(f"'{s}'\n" for s in self.subtokens), encoding="utf-8")


# a word run takes one leading space with it (halves the tokens of prose in strings)
_CHUNK = re.compile(r"[ ]?\w{1,%d}|\s{1,%d}|[^\w\s]")


class CodeTokenizer:
    """``encode(source)`` -> ``CodeEncoding``: lexemes -> chunks -> subwords, spans kept.

    Args:
        vocab: a ``WordPieceVocab`` or ``CubertVocab``.
        max_chunk: lexemes longer than this (and all strings) are cut into chunks first.
    """

    def __init__(self, vocab: WordPieceVocab | CubertVocab, max_chunk: int = 32):
        self.vocab = vocab
        self.max_chunk = max_chunk
        self._chunk = re.compile(_CHUNK.pattern % (max_chunk, max_chunk))
        tid = vocab.token_to_id
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (tid(t) for t in SPECIAL_TOKENS)
        self.special_ids = sorted({self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id})
        self._word_table: torch.Tensor | None = None  # per id, for word_starts

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def word_starts(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (..., T) -> bool (..., T): True at the first subword of every word (a lexeme, or a
        chunk of a string or of a lexeme longer than ``max_chunk``), for whole-word masking.
        WordPiece marks a continuation with "##"; CuBERT's vocabulary ends every word's last
        subtoken with "_", so a subtoken begins a word when the one before it ended one."""
        if self._word_table is None:
            pieces = [self.vocab.id_to_token(i) or "" for i in range(self.vocab.size)]
            if self.vocab.kind == "cubert":  # True: this subtoken ends a word
                table = [p.endswith("_") for p in pieces]
            else:  # True: this subword continues a word
                table = [p.startswith("##") for p in pieces]
            # special tokens are words of their own; not [UNK], which may stand for one character
            # inside a CuBERT word
            for i in (self.pad_id, self.cls_id, self.sep_id, self.mask_id):
                table[i] = self.vocab.kind == "cubert"
            self._word_table = torch.tensor(table)
        flags = self._word_table[ids.long()]
        if self.vocab.kind != "cubert":
            return ~flags
        starts = torch.ones_like(flags)
        starts[..., 1:] = flags[..., :-1]
        return starts

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def train(cls, sources: Iterable[str], vocab_size: int = 16384, max_chunk: int = 32) -> CodeTokenizer:
        """Train a WordPiece vocabulary on the lexemes (chunks) of ``sources``."""
        probe = cls.__new__(cls)
        probe.max_chunk = max_chunk
        probe._chunk = re.compile(_CHUNK.pattern % (max_chunk, max_chunk))

        def words() -> Iterator[list[str]]:
            for src in sources:
                yield probe._words(lex(src).tokens)[0]

        return cls(WordPieceVocab.train(words(), vocab_size), max_chunk)

    @classmethod
    def from_cubert_vocab(cls, path: str | Path, max_chunk: int = 32) -> CodeTokenizer:
        return cls(CubertVocab.from_file(path), max_chunk)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.vocab.save(folder)
        meta = {"vocab": self.vocab.kind, "max_chunk": self.max_chunk, "type_tokens": list(TYPE_TOKENS)}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    # --- encoding --------------------------------------------------------------------------
    def _words(self, lexemes: list[Lexeme]) -> tuple[list[str], list[int], list[int], list[int]]:
        """Chunk words, each with its absolute start, its end and its lexeme index.

        Type tokens stand for their own span (NEWLINE: the line break; DEDENT: empty)."""
        if not lexemes:
            return [], [], [], []
        texts, kinds, starts, ends = map(list, zip(*lexemes, strict=True))
        limit = self.max_chunk
        cut = [k for k, (t, kind) in enumerate(zip(texts, kinds, strict=True)) if kind == "string" or len(t) > limit]
        if not cut:
            return texts, starts, ends, list(range(len(texts)))
        words, w_starts, w_ends, owner = [], [], [], []
        prev = 0
        findall = self._chunk.findall
        for k in cut:  # copy the run of whole lexemes before k, then k's chunks
            words += texts[prev:k]
            w_starts += starts[prev:k]
            w_ends += ends[prev:k]
            owner += range(prev, k)
            parts = findall(texts[k])  # chunks tile the lexeme: every character is in one
            edges = list(accumulate(map(len, parts), initial=starts[k]))
            words += parts
            w_starts += edges[:-1]
            w_ends += edges[1:]
            owner += [k] * len(parts)
            prev = k + 1
        words += texts[prev:]
        w_starts += starts[prev:]
        w_ends += ends[prev:]
        owner += range(prev, len(texts))
        return words, w_starts, w_ends, owner

    def encode_lexed(self, lexed: Lexed) -> CodeEncoding:
        return self.encode_lexed_batch([lexed])[0]

    def encode(self, source: str | bytes) -> CodeEncoding:
        return self.encode_lexed(lex(source))

    def encode_batch(self, sources: Sequence[str | bytes]) -> list[CodeEncoding]:
        with no_gc():
            return self.encode_lexed_batch([lex(s) for s in sources])

    def encode_lexed_batch(self, batch: Sequence[Lexed]) -> list[CodeEncoding]:
        with no_gc():
            return self._encode_lexed_batch(batch)

    def _encode_lexed_batch(self, batch: Sequence[Lexed]) -> list[CodeEncoding]:
        prepared = [self._words(lx.tokens) for lx in batch]
        encoded = self.vocab.encode_words([p[0] for p in prepared])
        out = []
        for lx, (_, starts, ends, owner), (ids, wid, off) in zip(batch, prepared, encoded, strict=True):
            # ids (N,), wid (N,) word of each subword, off (N, 2) offsets inside the word
            if len(ids):
                # clipped to the word's end: a type token's subword covers exactly its lexeme's span
                spans = np.minimum(np.asarray(starts, dtype=np.int64)[wid, None] + off,
                                   np.asarray(ends, dtype=np.int64)[wid, None])
                lex_idx = np.asarray(owner, dtype=np.int64)[wid]
            else:
                spans, lex_idx = off, wid
            out.append(CodeEncoding(ids, spans, lex_idx, lx.tokens, lx.source, lx.error, lx.partial))
        return out


def load_code_tokenizer(path: str | Path) -> CodeTokenizer:
    """A folder written by ``CodeTokenizer.save``, a trained ``tokenizer.json``, or a CuBERT
    vocabulary file (one quoted subtoken per line). A file that is none of them (binary, not JSON, a
    JSON of another shape) is a ValueError naming it."""
    path = Path(path)
    try:
        return _load_code_tokenizer(path)
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, UnicodeDecodeError | json.JSONDecodeError):
            raise ValueError(f"{path} is not a code tokenizer (not UTF-8 JSON or a CuBERT vocabulary: {e}); give a "
                             "tokenizer folder, a tokenizer.json or a CuBERT vocab.txt") from None
        raise
    except Exception as e:  # noqa: BLE001  (tokenizers raises a bare Exception for a malformed tokenizer.json)
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"{path} is not a readable code tokenizer ({msg}); give a tokenizer folder, a tokenizer.json "
                         "or a CuBERT vocab.txt") from None


def _load_code_tokenizer(path: Path) -> CodeTokenizer:
    if path.is_dir():
        meta_file = path / META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if meta.get("vocab") == "cubert" or (not meta and (path / "vocab.txt").is_file() and not (path / "tokenizer.json").is_file()):
            return CodeTokenizer.from_cubert_vocab(path / "vocab.txt", meta.get("max_chunk", 32))
        if (path / "tokenizer.json").is_file():
            return CodeTokenizer(WordPieceVocab(Tokenizer.from_file(str(path / "tokenizer.json"))), meta.get("max_chunk", 32))
        raise FileNotFoundError(f"{path} holds neither {META_FILE}, tokenizer.json nor a CuBERT vocab.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no code tokenizer at {path}; give a folder, a tokenizer.json or a CuBERT vocabulary")
    if path.suffix == ".json":
        return CodeTokenizer(WordPieceVocab(Tokenizer.from_file(str(path))))
    return CodeTokenizer.from_cubert_vocab(path)

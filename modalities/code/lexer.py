"""CuBERT's lexical layer: Python's own ``tokenize``, comments dropped, layout as type tokens.

    lex(source) -> Lexed(tokens, error, partial)

Each ``Lexeme`` keeps its source span as character offsets ``[start, end)`` into the decoded
source, so any subword built from it maps back to the code (localization needs it).
NEWLINE, NL and DEDENT become the type tokens ``___NEWLINE___``, ``___NL___``, ``___DEDENT___``
(zero-width DEDENT spans sit where the dedent happens; the NEWLINE that ends a source without a
trailing newline is the empty span at its end, so every span lies inside the source); INDENT keeps its whitespace spelling;
strings stay whole; ENDMARKER is dropped (the model's [SEP] ends a sequence).

Sources that ``tokenize`` rejects never raise: null bytes and undecodable bytes give an empty
result with ``error`` set; an unterminated string or bracket, a bad dedent, or stray characters
(Python 2 backticks, ``$``) give the tokens read so far (or around the bad character) with
``partial=True`` and the reason in ``error``.
"""

from __future__ import annotations

import gc
import io
import re
import tokenize
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

NEWLINE = "___NEWLINE___"
NL = "___NL___"
DEDENT = "___DEDENT___"
ERROR = "___ERROR___"
TYPE_TOKENS = (NEWLINE, NL, DEDENT)  # the layout tokens every vocabulary holds as one unit

# token kinds (a short string per lexeme; "string" lexemes are the ones subwording may chunk)
_KIND = {
    tokenize.NAME: "name", tokenize.NUMBER: "number", tokenize.STRING: "string", tokenize.OP: "op",
    tokenize.NEWLINE: "newline", tokenize.NL: "nl", tokenize.INDENT: "indent", tokenize.DEDENT: "dedent",
    tokenize.ERRORTOKEN: "error",
}
_SPELLING = {tokenize.NEWLINE: NEWLINE, tokenize.NL: NL, tokenize.DEDENT: DEDENT}
_DROP = {tokenize.COMMENT, tokenize.ENDMARKER, tokenize.ENCODING}


class Lexeme(NamedTuple):
    text: str  # the spelling, or a type token (___NEWLINE___ ...)
    kind: str  # name | number | string | op | newline | nl | indent | dedent | error
    start: int  # character offset of the first character in the decoded source
    end: int  # one past the last character (start == end for DEDENT)


@dataclass
class Lexed:
    tokens: list[Lexeme] = field(default_factory=list)
    error: str | None = None  # why tokenize rejected (part of) the source; None when clean
    partial: bool = False  # True when tokens cover only part of the source, or hold error tokens
    source: str = ""  # the decoded source the spans index into

    @property
    def ok(self) -> bool:
        return self.error is None


@contextmanager
def no_gc():
    """Pause the cyclic garbage collector: lexing allocates millions of small acyclic tuples, and
    the collections they trigger traverse every live object (measured: 3x slower with it on)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decode_source(data: bytes) -> str:
    """Bytes -> str as Python reads a module: BOM / coding cookie honoured, else UTF-8.

    Raises ValueError naming the problem (null bytes, undecodable bytes)."""
    if b"\x00" in data:
        raise ValueError("source contains null bytes (a binary file, or UTF-16 without a BOM?)")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as e:
        raise ValueError(f"source is not decodable as declared (UTF-8 by default): {e}") from None
    return text[1:] if text.startswith("\ufeff") else text


def lex(source: str | bytes, keep_indent: bool = True, fast: bool = True) -> Lexed:
    """Split Python source into lexemes with character spans. Never raises on bad source.

    ``fast`` tries the one-regex scanner first (same lexemes, several times faster); tokenize
    handles whatever it declines."""
    if isinstance(source, bytes | bytearray):
        try:
            source = decode_source(bytes(source))
        except ValueError as e:
            return Lexed(error=str(e), partial=True)
    if "\x00" in source:
        return Lexed(error="source contains null bytes", partial=True)
    with no_gc():
        return _lex(source, keep_indent, fast)


def _lex(source: str, keep_indent: bool, fast: bool) -> Lexed:
    if fast:
        tokens = _fast_lex(source)
        if tokens is not None:
            if not keep_indent:
                tokens = [t for t in tokens if t.kind != "indent"]
            return Lexed(tokens=tokens, source=source)
    out = Lexed(source=source)
    n = len(source)
    line_starts = [0]  # char offset of each physical line, as tokenize reads them
    reader = io.StringIO(source, newline="")  # split on \n, \r\n, \r without translating them

    def readline() -> str:
        line = reader.readline()
        if line:
            line_starts.append(line_starts[-1] + len(line))
        return line

    tokens = out.tokens
    append = tokens.append
    try:
        for tok in tokenize.generate_tokens(readline):
            t = tok.type
            if t in _DROP:
                continue
            (r0, c0), (r1, c1) = tok.start, tok.end
            # clamped: the NEWLINE tokenize adds to a source without a trailing newline sits one
            # past its end; here it is the empty span at the end (every span indexes the source)
            start = min(line_starts[r0 - 1] + c0, n)
            end = min(line_starts[r1 - 1] + c1, n)
            if t == tokenize.INDENT:
                if keep_indent:
                    # INDENT's spelling is the whole new indentation; its span is that whitespace
                    append(Lexeme(tok.string, "indent", start, end))
                continue
            if t in _SPELLING:
                append(Lexeme(_SPELLING[t], _KIND[t], start, end if t != tokenize.DEDENT else start))
                continue
            if t == tokenize.ERRORTOKEN:
                if tok.string.isspace():  # trailing whitespace at EOF, form feeds: harmless
                    continue
                out.partial = True
                if out.error is None:
                    out.error = f"line {r0}: tokenize could not read {tok.string!r} (an unterminated string, Python 2 syntax or a stray character)"
                append(Lexeme(tok.string, "error", start, end))
                continue
            append(Lexeme(tok.string, _KIND.get(t, "op"), start, end))
    except tokenize.TokenError as e:  # EOF inside a string or bracket
        out.partial = True
        msg, (row, _) = e.args
        out.error = f"line {row}: {msg} (unterminated string or bracket)"
    except (IndentationError, SyntaxError) as e:  # unindent does not match any outer level
        out.partial = True
        out.error = f"line {e.lineno}: {e.msg}"
    return out


# --- fast path ------------------------------------------------------------------------------
# Python 3.11's tokenize is pure Python (~1.5 MB/s). This scanner produces the same lexemes for
# ordinary files with one compiled regex, and hands anything unusual back to tokenize: tabs or
# form feeds in indentation, an unterminated string or bracket, a bad dedent, a character
# tokenize would flag, a file not ending in a newline. tests/test_code.py checks both paths agree.
_P = tokenize.StringPrefix
_SCAN = re.compile(
    # most frequent first; a name directly followed by a quote is left to the string alternative
    r"(?P<ws>[ \t\f]++)|(?P<nl>\r?\n)|(?P<name>(?!\d)\w++(?!['\"]))"
    rf"|(?P<number>{tokenize.Number})|(?P<op>{tokenize.Special})"
    rf"""|(?P<string>{_P}(?:'''(?:[^'\\]++|\\.|'(?!''))*+'''|\"\"\"(?:[^"\\]++|\\.|"(?!""))*+\"\"\""""
    rf"""|'(?:[^'\\\r\n]++|\\(?:\r\n|.))*+'|"(?:[^"\\\r\n]++|\\(?:\r\n|.))*+"))"""
    r"|(?P<comment>#[^\r\n]*+)|(?P<cont>\\\r?\n)|(?P<other>.)",
    re.DOTALL,
)
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")


def _fast_lex(text: str) -> list[Lexeme] | None:
    """The lexemes of ``text`` as ``lex`` gives them, or None for tokenize to handle."""
    if not text.endswith("\n"):
        return None
    out: list[Lexeme] = []
    append = out.append
    new = tuple.__new__  # a Lexeme without NamedTuple's Python-level __new__
    indents = [0]
    depth = 0
    has_tokens = False  # the logical line has produced a token
    line_begin = 0  # offset of the physical line where the next logical line may start
    for m in _SCAN.finditer(text):
        kind = m.lastgroup
        if kind == "ws" or kind == "comment":
            continue
        start, end = m.span()
        if kind == "nl":
            if depth:
                append(new(Lexeme, (NL, "nl", start, end)))
            else:
                append(new(Lexeme, (NEWLINE, "newline", start, end) if has_tokens else (NL, "nl", start, end)))
                has_tokens = False
            line_begin = end
            continue
        if kind == "cont":
            if not has_tokens:  # a line that is only a continuation: tokenize has its own rules
                return None
            continue
        if kind == "other":
            return None
        if not has_tokens and not depth:  # the first token of a logical line: indentation decides
            has_tokens = True
            col = start - line_begin
            if col > indents[-1] or col < indents[-1]:
                ws = text[line_begin:start]
                if "\t" in ws or "\f" in ws:
                    return None
                if col > indents[-1]:
                    indents.append(col)
                    append(new(Lexeme, (ws, "indent", line_begin, start)))
                else:
                    while col < indents[-1]:
                        indents.pop()
                        append(new(Lexeme, (DEDENT, "dedent", start, start)))
                    if col != indents[-1]:
                        return None  # unindent does not match: tokenize words the error
            elif "\t" in text[line_begin:start] or "\f" in text[line_begin:start]:
                return None
        tok = m.group()
        if kind == "op":
            if tok in _OPEN:
                depth += 1
            elif tok in _CLOSE:
                if not depth:
                    return None
                depth -= 1
        append(new(Lexeme, (tok, kind, start, end)))
    if depth:
        return None
    n = len(text)
    for _ in indents[1:]:
        append(new(Lexeme, (DEDENT, "dedent", n, n)))
    return out

"""Code tokenisation: CuBERT's lexer (spans, layout tokens, bad input flagged, never a crash), the trained
WordPiece and CuBERT-format vocabularies, whole-word starts, the CuBERT checkpoint parity with transformers."""

import time

import numpy as np
import pytest
import torch
from code_fixtures import SAMPLE, cubert_vocab_file, module_source

from modalities.code import (
    DEDENT,
    NEWLINE,
    NL,
    CodeTokenizer,
    CubertVocab,
    embed_code,
    lex,
    load_code_encoder,
    load_code_tokenizer,
    load_cubert,
)


def test_lexer_follows_cubert():
    lexed = lex(SAMPLE)
    assert lexed.ok and not lexed.partial
    texts = [t.text for t in lexed.tokens]
    assert not any(t.startswith("#") for t in texts)  # comments dropped
    assert NEWLINE in texts and NL in texts and DEDENT in texts
    assert '"""Area of a rectangle."""' in texts  # strings whole
    assert "    " in texts  # INDENT keeps its spelling
    for t in lexed.tokens:
        if t.kind in ("newline", "nl"):
            assert SAMPLE[t.start : t.end] in ("\n", "\r\n")
        elif t.kind == "dedent":
            assert t.start == t.end
        else:
            assert SAMPLE[t.start : t.end] == t.text  # spans are exact
    # \r\n line ends keep exact spans too
    crlf = SAMPLE.replace("\n", "\r\n")
    assert all(crlf[t.start : t.end] == t.text for t in lex(crlf).tokens if t.kind not in ("newline", "nl", "dedent"))


@pytest.mark.parametrize(
    "source, expect",
    [
        (b'x = "unterminated\ny = 2\n', "unterminated string"),
        (b"def f():\n        x = 1\n    y = 2\n", "unindent"),
        (b"print `x`\n", "Python 2"),
        (b'x = """never closed\n', "EOF in multi-line"),
        (b"a = 1\x00\n", "null bytes"),
        (b"s = '\xe9t\xe9'\n", "not decodable"),
        (b"x = (1,\n", "EOF in multi-line"),
    ],
)
def test_bad_sources_give_a_flag_never_a_crash(source, expect):
    lexed = lex(source)
    assert lexed.partial and expect in lexed.error
    tok = CodeTokenizer.train([SAMPLE] * 3, 300)
    enc = tok.encode(source)  # the tokenizer passes the flag on and still returns what it read
    assert enc.partial and enc.error == lexed.error


def test_empty_and_huge_files(tmp_path):
    tok = CodeTokenizer.train([SAMPLE] * 3, 300)
    empty = tok.encode(b"")
    assert len(empty) == 0 and empty.error is None
    unit = SAMPLE.encode()
    big = unit * (10 * 2**20 // len(unit) + 1)  # a 10 MB module
    t0 = time.perf_counter()
    enc = tok.encode(big)
    assert time.perf_counter() - t0 < 120
    assert enc.error is None and enc.spans[-1, 1] <= len(big)
    assert len(enc) == len(tok.encode(unit)) * (len(big) // len(unit))  # the same per copy: nothing lost


def test_trained_tokenizer_spans_and_roundtrip(tmp_path):
    tok = CodeTokenizer.train([SAMPLE, module_source(20)], 400)
    enc = tok.encode(SAMPLE)
    assert (enc.ids >= 0).all() and len(enc.ids) == len(enc.spans) == len(enc.lexeme)
    for i in range(len(enc)):
        lexeme = enc.lexemes[enc.lexeme[i]]
        s, e = enc.spans[i]
        assert lexeme.start <= s <= e <= max(lexeme.end, lexeme.start)
        if lexeme.kind == "name":  # a name's subwords spell it exactly, in order
            assert SAMPLE[s:e] in lexeme.text
    names = [i for i, lx in enumerate(enc.lexemes) if lx.kind == "name"]
    for k in names:
        rows = np.nonzero(enc.lexeme == k)[0]
        assert "".join(SAMPLE[s:e] for s, e in enc.spans[rows]) == enc.lexemes[k].text
    # the subword of `width` in `result = width * height` is found by its character offset
    at = SAMPLE.index("width * height")
    assert SAMPLE[enc.spans[enc.token_at(at), 0] :].startswith("width")
    tok.save(tmp_path / "tok")
    again = load_code_tokenizer(tmp_path / "tok")
    assert np.array_equal(again.encode(SAMPLE).ids, enc.ids)
    assert tok.vocab.token_to_id(NEWLINE) is not None and tok.mask_id is not None


def test_word_starts_follow_the_lexemes_for_both_vocabularies(tmp_path):
    """CodeTokenizer.word_starts (whole-word masking) marks the first subword of every lexeme and
    no other subword of a name, keyword or number (strings are cut into chunk words), WordPiece
    ("##" continuations) and CuBERT ("_" word ends) alike."""
    src = "def foo_bar(x, y):\n    return x + y\n"
    wordpiece = CodeTokenizer.train([module_source(12), SAMPLE], 120)  # small: most names split
    for tok in (wordpiece, CodeTokenizer.from_cubert_vocab(cubert_vocab_file(tmp_path / "vocab.txt"))):
        for text in (src, SAMPLE.split("class")[0].replace("# a comment", "").replace("# trailing comment", "")):
            enc = tok.encode(text)
            if tok.vocab.kind == "cubert" and tok.unk_id in enc.ids:
                continue  # the toy CuBERT vocabulary cannot spell SAMPLE
            lexeme_start = np.r_[True, enc.lexeme[1:] != enc.lexeme[:-1]]
            in_string = np.array([enc.lexemes[k].kind == "string" for k in enc.lexeme])
            inside_name = ~lexeme_start & ~in_string  # later subwords of a name, keyword, number
            assert inside_name.any()  # some name is split, so the check has something to catch
            ids = torch.as_tensor(np.r_[tok.cls_id, enc.ids, tok.sep_id, tok.pad_id])
            got = tok.word_starts(ids)
            assert got[0] and got[-2] and got[-1]  # [CLS], [SEP], [PAD] are words of their own
            assert got[1:-2][torch.as_tensor(lexeme_start)].all() and not got[1:-2][torch.as_tensor(inside_name)].any()
            assert torch.equal(tok.word_starts(ids[None].repeat(3, 1)), got[None].repeat(3, 1))  # batched


def test_cubert_vocabulary_format(tmp_path):
    tok = CodeTokenizer.from_cubert_vocab(cubert_vocab_file(tmp_path / "vocab.txt"))
    src = "def foo_bar(x, y):\n    return x + y\n"
    enc = tok.encode(src)
    pieces = [tok.vocab.id_to_token(int(i)) for i in enc.ids]
    assert pieces[:3] == ["def_", "foo", "\\ubar_"]  # tensor2tensor escaping: _ -> \u, end marker _
    assert [src[s:e] for s, e in enc.spans[1:3]] == ["foo", "_bar"]
    # layout tokens escaped as tensor2tensor stores them: ___NEWLINE___ -> \u\u\uNEWLINE\u\u\u_
    assert "\\u\\u\\uNEWLINE\\u\\u\\u_" in pieces and "    _" in pieces
    assert tok.cls_id == 2 and tok.pad_id == 0 and tok.mask_id == 4
    unknown = tok.encode("zz = 1\n")  # characters outside the alphabet become [UNK], never a crash
    assert tok.unk_id in unknown.ids.tolist()
    bad = tmp_path / "bad.txt"
    bad.write_text("def_\nfoo\n")
    with pytest.raises(ValueError, match="quoted"):
        CubertVocab.from_file(bad)


def test_cubert_checkpoint_parity_with_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = cubert_vocab_file(tmp_path / "cubert" / "vocab.txt") if (tmp_path / "cubert").mkdir() is None else None
    n = len(vocab.read_text().splitlines())
    cfg = transformers.BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(cfg).eval()  # with MLM/NSP heads, as CuBERT's checkpoints
    hf.save_pretrained(tmp_path / "cubert", safe_serialization=True)
    encoder, tok = load_cubert(tmp_path / "cubert")
    assert any(k.startswith("cls.") for k in encoder.meta["dropped"])
    enc = tok.encode("def foo_bar(x, y):\n    return x + y\n")
    ids = torch.tensor([[tok.cls_id, *enc.ids.tolist(), tok.sep_id]])
    ours = encoder(input_ids=ids).last_hidden_state
    theirs = hf.bert(input_ids=ids).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    # the same folder through the generic code-encoder loader, and embedded ([CLS] pooling = transformers' state)
    encoder2, tok2 = load_code_encoder(tmp_path / "cubert")
    assert tok2.vocab.kind == "cubert" and tok2.encode("x = 1\n").ids.tolist() == tok.encode("x = 1\n").ids.tolist()
    vec, info = embed_code(encoder2, tok2, ["def foo_bar(x, y):\n    return x + y\n"], pooling="cls", normalize=False)
    assert torch.allclose(vec[0], theirs[0, 0], atol=1e-5) and not info[0].truncated


def test_fast_scanner_agrees_with_tokenize():
    import sysconfig
    from pathlib import Path

    from modalities.code.lexer import _fast_lex, decode_source

    sources = [SAMPLE, SAMPLE.replace("\n", "\r\n"), module_source(5), "x = (1,\n     2)  # c\n\n\\\n\ny = 3\n"]
    root = Path(sysconfig.get_paths()["stdlib"])
    sources += [decode_source(p.read_bytes()) for p in sorted(root.glob("*.py"))[::8]]
    compared = 0
    for src in sources:
        fast = _fast_lex(src)
        if fast is None:  # declined: tokenize handles it
            continue
        assert fast == lex(src, fast=False).tokens
        compared += 1
    assert compared >= len(sources) * 0.8
    for bad in ('x = "abc\n', "def f():\n        x\n    y\n", "a = `b`\n", "x = (1,\n", "no_newline_at_end"):
        assert _fast_lex(bad) is None  # every bad case goes to tokenize, which flags it


def test_prepare_code_tokenizer_trains_where_fit_looks(tmp_path, monkeypatch):
    from code_fixtures import write_manifest_corpus

    from tasks.cli import main as tessera
    from tasks.data.code import MaskedCodeDataModule

    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path / "cache"))
    corpus = write_manifest_corpus(tmp_path / "corpus")
    assert tessera(["prepare", "code-tokenizer", "--corpus", str(corpus), "--vocab-size", "300", "--quiet"]) == 0
    folder = MaskedCodeDataModule(corpus=str(corpus), vocab_size=300).tokenizer_file
    assert load_code_tokenizer(folder).vocab_size <= 300 and not folder.with_name(folder.name + ".partial").exists()


@pytest.mark.parametrize("case", ["missing corpus", "small vocabulary", "unknown option"])
def test_prepare_code_tokenizer_bad_inputs_exit_2_with_one_line(tmp_path, capsys, case):
    from tasks.cli import main as tessera

    args = ["--corpus", str(tmp_path), "--out", str(tmp_path / "tok")]
    if case == "missing corpus":
        args[1] = named = str(tmp_path / "nowhere")
    elif case == "small vocabulary":
        args, named = [*args, "--vocab-size", "10"], "--vocab-size"
    else:
        args, named = [*args, "--bogus"], "--bogus"
    rc = tessera(["prepare", "code-tokenizer", *args, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err)

"""Awkward Python sources (no trailing newline, binary garbage, null bytes, undeclared Latin-1, a 1 MB line,
5000 nested brackets, unterminated strings, bad dedents, CR line ends, a bad coding cookie, Python 2) through
the lexer, the code tokenizer, `tessera embed` and `tessera prepare code-py150`: never an exception, every
span inside its source, unreadable files counted."""

from __future__ import annotations

import json

import pytest
from materials import PY_BAD, code_encoder_folder
from verdict import assert_refused_or_counted, run

from modalities.code import CodeTokenizer
from modalities.code.lexer import NEWLINE, lex

GOOD = "def area(width, height):\n    total = width * height\n    return total\n"


@pytest.fixture(scope="module")
def tokenizer():
    return CodeTokenizer.train([GOOD] * 3, 200)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return code_encoder_folder(tmp_path_factory.mktemp("code") / "encoder")


@pytest.mark.parametrize("name", list(PY_BAD))
def test_the_lexer_and_tokenizer_never_raise_and_every_span_lies_inside_the_source(tokenizer, name):
    lexed = lex(PY_BAD[name])
    n = len(lexed.source)
    assert all(0 <= t.start <= t.end <= n for t in lexed.tokens), [t for t in lexed.tokens if t.end > n][:3]
    enc = tokenizer.encode(PY_BAD[name])
    assert len(enc.ids) == len(enc.spans)
    if len(enc.spans):
        assert enc.spans.min() >= 0 and enc.spans.max() <= len(enc.source)


@pytest.mark.parametrize("source", ["x = 1", "def f():\n    return 1", "x = (1,\n 2)", "if x:\n  y  ", "x = 1  # c"])
def test_the_end_of_file_newline_of_a_source_without_one_is_the_empty_span_at_its_end(tokenizer, source):
    lexed = lex(source)
    last_newline = [t for t in lexed.tokens if t.text == NEWLINE][-1]
    assert (last_newline.start, last_newline.end) == (len(source), len(source))
    assert lexed.ok
    enc = tokenizer.encode(source)
    assert enc.spans.max() <= len(source)
    assert enc.source[slice(*enc.spans[-1])] == ""  # the last subword is that NEWLINE: nothing past the end


def test_the_fast_scanner_and_tokenize_agree_once_the_newline_is_added(tokenizer):
    """The empty span is the only difference a missing trailing newline makes."""
    a, b = lex("def f(x):\n    return x"), lex("def f(x):\n    return x\n")
    assert [t.text for t in a.tokens] == [t.text for t in b.tokens]
    assert [(t.start, t.end) for t in a.tokens][:-3] == [(t.start, t.end) for t in b.tokens][:-3]


@pytest.mark.parametrize("name", list(PY_BAD))
def test_embed_reads_an_awkward_python_file_or_counts_it(encoder, tmp_path, capsys, name):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / name).write_bytes(PY_BAD[name])
    (folder / "good.py").write_text(GOOD)
    rc, out, err = run(capsys, ["embed", "--encoder", encoder, folder, "--out", tmp_path / "emb", "--quiet"])
    assert rc == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "emb" / "summary.json").read_text())["count"] >= 1


def test_embed_of_only_unreadable_python_is_one_line(encoder, tmp_path, capsys):
    folder = tmp_path / "binary-only"
    folder.mkdir()
    for name in ("py-binary-garbage.py", "py-null-bytes.py", "py-0-byte.py"):
        (folder / name).write_bytes(PY_BAD[name])
    rc, out, err = run(capsys, ["embed", "--encoder", encoder, folder, "--out", tmp_path / "emb", "--quiet"])
    assert_refused_or_counted(rc, out, err, folder.name)


def test_prepare_code_py150_drops_and_counts_every_file_that_does_not_lex(tmp_path, capsys):
    root, manifests = tmp_path / "py150", tmp_path / "manifests"
    (root / "data" / "repo").mkdir(parents=True)
    manifests.mkdir()
    names = [*PY_BAD, "good.py"]
    for name in PY_BAD:
        (root / "data" / "repo" / name).write_bytes(PY_BAD[name])
    (root / "data" / "repo" / "good.py").write_text(GOOD)
    listing = "".join(f"data/repo/{n}\n" for n in names)
    (manifests / "python100k_train.txt").write_text(listing)
    (manifests / "python50k_eval.txt").write_text("data/repo/good.py\n")
    rc, out, err = run(capsys, ["prepare", "code-py150", "--manifests", manifests, "--root", root,
                                "--out", tmp_path / "corpus"])
    assert rc == 0, err
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    assert stats["files"] + sum(stats["skipped"].values()) == len(names) + 1  # every listed file kept or counted
    assert stats["skipped"]["not Python 3 (does not lex)"] >= 2  # the binary file and the one with null bytes

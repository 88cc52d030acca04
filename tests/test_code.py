"""CuBERT modality: lexer, tokenizers (trained and CuBERT format), bad input, corpus, benchmark
generator, data modules and fine-tuning systems, CuBERT checkpoint import (parity vs transformers)."""

import ast
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import load_script

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import (
    DEDENT,
    HOLE,
    NEWLINE,
    NL,
    TASKS,
    BiLSTMConfig,
    BiLSTMEncoder,
    CodeTokenizer,
    CubertVocab,
    embed_code,
    exception_vocabulary,
    extract_functions,
    generate,
    lex,
    load_code_encoder,
    load_code_tokenizer,
    load_cubert,
)
from modalities.code.corpus import CorpusStats, SourceFile, assign_splits, build_corpus, licence_of
from tasks.code import CodeClassifierSystem, VarMisusePointerSystem
from tasks.data.code import CodeTaskDataModule, MaskedCodeDataModule, chunk_logical_lines, featurise
from tasks.text import MaskedLMSystem

SAMPLE = '''import os  # a comment


def area(width, height):
    """Area of a rectangle."""
    result = width * height  # trailing comment
    if result < 0:
        raise ValueError("negative")
    return result


class Box:
    def scale(self, factor, offset):
        """Scale the box by a factor."""
        try:
            total = self.size * factor - offset
        except TypeError:
            total = offset
        return total
'''

VARIANTS = [
    "def f{i}(items, limit):\n    count = 0\n    for item in items:\n        if item > limit and count < 10:\n"
    "            count = count + 1\n    return count - limit\n",
    "def g{i}(path, mode):\n    \"\"\"Open a file at path in mode and read it all.\"\"\"\n    try:\n        handle = open(path, mode)\n"
    "    except OSError:\n        return None\n    data = handle.read()\n    return data[0] / len(data)\n",
    "def h{i}(key, table):\n    \"\"\"Look the key up in the table or return a default.\"\"\"\n    try:\n        value = table[key]\n"
    "    except KeyError:\n        value = key * 2 % 7\n    return value >= key\n",
]


def module_source(n: int = 30, offset: int = 0) -> str:
    return "\n\n".join(VARIANTS[(i + offset) % 3].format(i=i) for i in range(n))


# --- lexer ---------------------------------------------------------------------------------
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


# --- tokenizer -----------------------------------------------------------------------------
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


def cubert_vocab_file(path):
    subtokens = ["<pad>_", "<EOS>_", "[CLS]_", "[SEP]_", "[MASK]_", "[UNK]_", "\\u\\u\\uNEWLINE\\u\\u\\u_",
                 "\\u\\u\\uNL\\u\\u\\u_", "\\u\\u\\uDEDENT\\u\\u\\u_", "def_", "return_", "(_", ")_", ":_", ",_", "+_", "=_", "    _",
                 "foo", "\\ubar_", "x_", "y_", "a", "b", "c", "\\u", "_", "1", "\\\\"]
    path.write_text("".join(f"'{s}'\n" for s in subtokens), encoding="utf-8")
    return path


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


# --- corpus --------------------------------------------------------------------------------
class FakeDist:
    def __init__(self, **fields):
        self.metadata = _Meta(fields)


class _Meta(dict):
    def get_all(self, key):
        v = self.get(key)
        return v if isinstance(v, list) else None


def test_licence_classification():
    assert licence_of(FakeDist(**{"License-Expression": "MIT"}))[1]
    assert licence_of(FakeDist(**{"License-Expression": "Apache-2.0 OR BSD-2-Clause"}))[1]
    assert not licence_of(FakeDist(**{"License-Expression": "MPL-2.0 AND MIT"}))[1]
    assert not licence_of(FakeDist(**{"License-Expression": "LGPL-2.1-or-later"}))[1]
    assert licence_of(FakeDist(Classifier=["License :: OSI Approved :: BSD License"]))[1]
    assert not licence_of(FakeDist(Classifier=["License :: Other/Proprietary License"]))[1]
    assert not licence_of(FakeDist())[1]  # unknown: left out


def test_corpus_dedupes_skips_and_splits_by_package(tmp_path):
    files = []
    for p in range(12):
        for k in range(3):
            path = tmp_path / f"pkg{p}_{k}.py"
            path.write_text(module_source(3, offset=p * 3 + k) + f"\nVALUE_{p}_{k} = {k}\n")
            files.append(SourceFile(str(path), f"pkg{p}", "MIT"))
    dup = tmp_path / "dup.py"  # same tokens as pkg0_0, other comments and spacing
    dup.write_text("# another header\n" + (tmp_path / "pkg0_0.py").read_text().replace(" = ", "=") )
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"x = '\xff\n")
    py2 = tmp_path / "py2.py"
    py2.write_text("print 'hello'\n")
    files += [SourceFile(str(dup), "other", "MIT"), SourceFile(str(bad), "other", "MIT"), SourceFile(str(py2), "other", "MIT")]
    stats = CorpusStats()
    rows, summary = build_corpus(files, stats, progress=False)
    assert summary["duplicates_removed"] == 1 and summary["files_kept"] == 36
    assert summary["skipped"]["not decodable"] == 1 and summary["skipped"]["not Python 3 (ast.parse fails)"] == 1
    splits = {}
    for r in rows:
        splits.setdefault(r["package"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())  # no package in two splits
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    assert assign_splits({"a": 5, "b": 1}, seed=1) == assign_splits({"a": 5, "b": 1}, seed=1)


# --- benchmark -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def functions():
    fns = []
    for p in range(6):
        fns += list(extract_functions(module_source(40, offset=p), f"pkg{p}", f"pkg{p}.py"))
    return fns


@pytest.mark.parametrize("task", TASKS)
def test_benchmark_examples_parse_balanced_deterministic(task, functions):
    exc = exception_vocabulary(functions)
    assert set(exc) == {"OSError", "KeyError"}
    examples = generate(task, functions, seed=3, exceptions=exc)
    assert examples == generate(task, functions, seed=3, exceptions=exc)
    assert examples != generate(task, functions, seed=4, exceptions=exc)
    assert len(examples) > 50
    for ex in examples:
        ast.parse(ex["source"])
    labels = [ex["label"] for ex in examples]
    if task == "exception_type":
        assert all(HOLE in ex["source"] for ex in examples)
        assert all(ex["label_name"] not in ex["source"].split("except")[1][:20] for ex in examples)
    else:
        assert abs(sum(labels) - len(labels) / 2) <= 1  # balanced within the split
    if task == "variable_misuse_repair":
        for ex in examples:
            src = ex["source"]
            if ex["error_span"] is not None:
                s, e = ex["error_span"]
                right = {src[a:b] for a, b in ex["target_spans"]}
                assert len(right) == 1 and src[s:e] not in right
                assert [s, e] in ex["candidate_spans"]
            else:
                assert ex["target_spans"] == []
            assert all(src[a:b].isidentifier() for a, b in ex["candidate_spans"])


def test_extra_training_corpus_joins_train_only_and_never_leaks_held_out_functions(tmp_path):
    """scripts/code_benchmark.py --extra-train: a second corpus adds training functions; the valid and
    test examples are byte-identical to those written without it, and a held-out function copied into
    the extra corpus (reformatted, with a comment) never reaches the training split."""
    bench = load_script("code_benchmark")

    def renamed(prefix, n=24):
        return module_source(n).replace("def f", f"def {prefix}f").replace("def g", f"def {prefix}g").replace("def h", f"def {prefix}h")

    def corpus(name, files):  # files: (file name, source, package, split, hash)
        d = tmp_path / name
        d.mkdir()
        rows = []
        for fname, src, pkg, split, h in files:
            (d / fname).write_text(src)
            rows.append({"path": str(d / fname), "package": pkg, "hash": h, "split": split})
        (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d, rows

    main, main_rows = corpus("main", [("a.py", renamed("a"), "pa", "train", "ha"), ("v.py", renamed("v"), "pv", "valid", "hv"),
                                      ("t.py", renamed("t"), "pt", "test", "ht")])
    leaked = "def tf0(items, limit):\n    count = 0  # reformatted copy of a test function\n    for item in items:\n" \
             "        if (item > limit) and count < 10:\n            count = count + 1\n    return count - limit\n"
    extra, _ = corpus("extra", [
        ("same_path.py", "", "x", "train", "h0"),  # replaced below by main's own path
        ("same_hash.py", renamed("v"), "pv2", "test", "hv"),  # main's valid file under another path
        ("new.py", renamed("e") + "\n\n" + leaked, "pe", "valid", "he"),
        ("dup.py", renamed("e", 6), "pd", "test", "hd"),  # functions already in new.py
    ])
    rows = [json.loads(line) for line in (extra / "manifest.jsonl").open()]
    rows[0]["path"] = main_rows[0]["path"]
    (extra / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    tasks = ("variable_misuse", "exception_type")
    plain = bench.write_benchmark(main, tmp_path / "plain", tasks, progress=False)
    more = bench.write_benchmark(main, tmp_path / "more", tasks, extra_train=extra, progress=False)
    info = more["extra_train"]
    assert info["files"] == 2 and info["packages"] == 2  # same path and same hash left out
    assert info["functions"] == 24 and info["dropped"] == {"in valid / test": 1, "duplicate": 6}
    assert more["functions"]["train"] == plain["functions"]["train"] + 24
    assert more["exception_types"] == plain["exception_types"]
    for task in tasks:
        for split in ("valid", "test"):
            assert (tmp_path / "more" / task / f"{split}.jsonl").read_text() == (tmp_path / "plain" / task / f"{split}.jsonl").read_text()
    train = [json.loads(line) for line in (tmp_path / "more" / "variable_misuse" / "train.jsonl").open()]
    assert {ex["package"] for ex in train} == {"pa", "pe"}
    assert not any(ex["source"].startswith("def tf0") for ex in train)
    assert len(train) > plain["tasks"]["variable_misuse"]["train"]["examples"]


def test_buggy_examples_differ_from_their_function_by_one_edit(functions):
    originals = {(f.path, f.name): f.source for f in functions}
    for task in ("variable_misuse", "wrong_binary_operator", "swapped_operands"):
        for ex in generate(task, functions, seed=0):
            orig = originals[(ex["path"], ex["function"])]
            assert (ex["source"] != orig) == bool(ex["label"])


def test_paired_gives_every_function_its_clean_and_its_buggy_example(functions):
    originals = {(f.path, f.name, f.line): f.source for f in functions}
    for task in ("variable_misuse", "wrong_binary_operator", "swapped_operands", "variable_misuse_repair"):
        single = generate(task, functions, seed=0)
        paired = generate(task, functions, seed=0, paired=True)
        by_fn: dict = {}
        for ex in paired:
            by_fn.setdefault((ex["path"], ex["function"], ex["line"]), []).append(ex)
        assert len(paired) == 2 * len(by_fn) and len(by_fn) >= len(single) - 1, task  # every eligible function
        for key, (a, b) in by_fn.items():
            clean, buggy = sorted((a, b), key=lambda ex: ex["label"])
            assert (clean["label"], buggy["label"]) == (0, 1), task
            assert clean["source"] == originals[key] != buggy["source"], task
            # the same mutation as unpaired: the clean site is where the edit goes
            assert clean["site"][0] == buggy["site"][0], task
        # each unpaired example is one of its function's pair
        assert all(ex in by_fn[(ex["path"], ex["function"], ex["line"])] for ex in single), task


OPERATORS = {"+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "==", "!=", "<", "<=", ">", ">=",
             "is", "in", "and", "or"}


def test_sites_mark_the_edit_in_buggy_and_clean_examples(functions):
    originals = {(f.path, f.name): f.source for f in functions}
    exc = exception_vocabulary(functions)
    for task in ("variable_misuse", "wrong_binary_operator", "swapped_operands", "variable_misuse_repair", "exception_type"):
        examples = generate(task, functions, seed=0, exceptions=exc)
        for ex in examples:
            src, (s, e) = ex["source"], ex["site"]
            orig = originals[(ex["path"], ex["function"])]
            if task == "exception_type":
                assert src[s:e] == HOLE
            elif ex["label"]:  # the edit sits exactly at the site: outside it the text is the original's
                assert src[:s] == orig[:s] and src[e:] == orig[len(orig) - (len(src) - e):]
                if task == "swapped_operands":  # the same characters, reordered
                    assert src[s:e] != orig[s:e] and sorted(src[s:e]) == sorted(orig[s:e])
            else:
                assert src == orig
            if task in ("variable_misuse", "variable_misuse_repair"):
                assert src[s:e].isidentifier()
            if task == "wrong_binary_operator":
                assert src[s:e].strip() in OPERATORS
        assert {ex["label"] for ex in examples} >= {0, 1} or task == "exception_type"


def test_featurise_drops_examples_whose_site_is_cut_off(benchmark_dir):
    bench, tokdir = benchmark_dir
    tok = load_code_tokenizer(tokdir)
    rows = [json.loads(line) for line in (bench / "variable_misuse" / "train.jsonl").open()]
    for label in (0, 1):  # the same rule for both labels
        r = max((r for r in rows if r["label"] == label), key=lambda r: r["site"][0])
        enc = tok.encode(r["source"])
        site_token = int(np.searchsorted(enc.spans[:, 0], r["site"][1]))  # first token after the site
        assert featurise(r, "variable_misuse", tok, site_token + 2) is not None  # [CLS] + tokens .. site + [SEP]
        assert featurise(r, "variable_misuse", tok, site_token - 1) is None
        assert featurise({k: v for k, v in r.items() if k != "site"}, "variable_misuse", tok, site_token - 1) is not None


def test_bilstm_matches_a_packed_bidirectional_lstm():
    torch.manual_seed(0)
    cfg = BiLSTMConfig(vocab_size=50, embedding_size=12, hidden_size=16, num_layers=2, dropout=0.0)
    ours = BiLSTMEncoder(cfg).eval()
    ref = torch.nn.LSTM(12, 8, num_layers=2, bidirectional=True, batch_first=True).eval()
    with torch.no_grad():
        for k, layer in enumerate(ours.layers):
            for direction, suffix in (("fwd", ""), ("bwd", "_reverse")):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{k}{suffix}").copy_(getattr(layer[direction], f"{name}_l0"))
    lengths = torch.tensor([9, 3, 6, 1])
    mask = torch.arange(9)[None] < lengths[:, None]
    ids = torch.randint(1, 50, (4, 9)).masked_fill(~mask, 0)
    got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    packed = torch.nn.utils.rnn.pack_padded_sequence(ours.embed(ids), lengths, batch_first=True, enforce_sorted=False)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=9)
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)
    assert got[~mask].abs().max() == 0
    # padding never leaks into a row: the same row alone gives the same states
    alone = ours(input_ids=ids[1:2, :3], attention_mask=mask[1:2, :3]).last_hidden_state
    torch.testing.assert_close(alone[0], got[1, :3], atol=1e-5, rtol=1e-5)


# --- data and systems ----------------------------------------------------------------------
def test_chunk_logical_lines():
    ids = np.array([7, 7, 1, 7, 1, 7, 7, 7, 7, 7, 1, 7])  # 1 = NEWLINE
    chunks = chunk_logical_lines(ids, 1, 5)
    assert [c.tolist() for c in chunks] == [[7, 7, 1, 7, 1], [7, 7, 7, 7, 7], [1, 7]]
    assert np.array_equal(np.concatenate(chunks), ids)


@pytest.fixture
def benchmark_dir(tmp_path, functions):
    out = tmp_path / "bench"
    exc = exception_vocabulary(functions)
    for task in ("variable_misuse", "variable_misuse_repair", "function_docstring"):
        (out / task).mkdir(parents=True)
        for split, part in (("train", functions[: len(functions) // 2]), ("valid", functions[len(functions) // 2 :]),
                            ("test", functions[len(functions) // 2 :])):
            rows = generate(task, part, seed=0, exceptions=exc, split=split)
            (out / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = CodeTokenizer.train([f.source for f in functions], 300)
    tok.save(tmp_path / "tok")
    return out, tmp_path / "tok"


def tiny_encoder(vocab=300):
    return TokenEncoder(TokenEncoderConfig(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2,
                                           intermediate_size=64, max_position_embeddings=128, attention_backend="unpadded"))


def test_pointer_features_point_at_the_bug(benchmark_dir):
    bench, tokdir = benchmark_dir
    tok = load_code_tokenizer(tokdir)
    rows = [json.loads(line) for line in (bench / "variable_misuse_repair" / "train.jsonl").open()]
    for r in rows[:40]:
        f = featurise(r, "variable_misuse_repair", tok, 512)
        enc = tok.encode(r["source"])
        if r["error_span"] is None:
            assert f["error_position"] == 0 and len(f["targets"]) == 0
        else:
            k = f["error_position"] - 1  # [CLS] shifts positions by one
            assert enc.spans[k, 0] == r["error_span"][0]
            assert f["error_position"] in f["candidates"].tolist()
            assert all(r["source"][enc.spans[t - 1, 0]:].startswith(r["source"][r["target_spans"][0][0]:r["target_spans"][0][1]])
                       for t in f["targets"].tolist())


@pytest.mark.slow
@pytest.mark.parametrize("task, system", [("variable_misuse", "classifier"), ("variable_misuse_repair", "pointer"),
                                          ("function_docstring", "classifier"), ("variable_misuse", "bilstm")])
def test_finetune_systems_fit_and_test(benchmark_dir, tmp_path, task, system):
    bench, tokdir = benchmark_dir
    dm = CodeTaskDataModule(task, str(bench), str(tokdir), max_length=128, batch_size=8, max_examples=64)
    if system == "pointer":
        model = VarMisusePointerSystem(tiny_encoder(), lr=1e-3)
    elif system == "bilstm":
        model = CodeClassifierSystem(BiLSTMEncoder(BiLSTMConfig(vocab_size=300, hidden_size=32)), pooling="mean")
    else:
        model = CodeClassifierSystem(tiny_encoder(), num_classes=2)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, use_distributed_sampler=False,
                        limit_val_batches=2, val_check_interval=2, enable_model_summary=False)
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    keys = ["test/accuracy"] if system != "pointer" else ["test/classification", "test/localization", "test/joint"]
    for k in keys:
        assert 0.0 <= result[k] <= 1.0
    assert json.loads((tmp_path / "test_metrics.json").read_text())


@pytest.mark.slow
def test_code_mlm_pretrain_then_finetune_from_checkpoint(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = []
    for p in range(8):
        path = folder / f"m{p}.py"
        rare = "".join(f"def rare{p}{k}(argument_{p}{k}_xq, quirky_{p}{k}_zv):\n    return argument_{p}{k}_xq - quirky_{p}{k}_zv\n\n\n"
                       for k in range(4))  # names a 300-subword vocabulary must split
        path.write_text(rare + module_source(12, offset=p))
        rows.append({"path": str(path), "package": f"p{p}", "split": "valid" if p == 0 else "train"})
    (folder / "bad.py").write_bytes(b"x = '\xff\n")
    rows.append({"path": str(folder / "bad.py"), "package": "p9", "split": "train"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = MaskedCodeDataModule(corpus=str(folder), vocab_size=300, max_length=64, batch_size=8,
                              cache_dir=str(tmp_path / "cache"))
    system = MaskedLMSystem(tiny_encoder(), lr=1e-3)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, use_distributed_sampler=False, limit_val_batches=1,
                        enable_model_summary=False)
    trainer.fit(system, dm)
    assert dm.stats["train_sequences"] > 0 and dm.stats["val_sequences"] > 0
    assert dm.stats["skipped_files"] == {"rejected by tokenize": 1}  # bad.py counted, not fatal
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 64 and (batch["labels"] != -100).any()
    # whole-word masking: every split name is predicted whole or not at all
    dm.whole_word = True
    batch = next(iter(dm.train_dataloader()))
    chosen = batch["labels"] != -100
    original = torch.where(chosen, batch["labels"], batch["input_ids"])  # [MASK] would start words of its own
    word = dm.code_tokenizer.word_starts(original).long().cumsum(1)
    split_words = 0
    for r in range(len(word)):
        for w in word[r].unique():
            at = word[r] == w
            split_words += int(at.sum() > 1)
            assert chosen[r, at].all() or not chosen[r, at].any()
    assert split_words > 0 and chosen.any()
    ckpt = tmp_path / "mlm.ckpt"
    trainer.save_checkpoint(ckpt)
    fine = CodeClassifierSystem(tiny_encoder(), pretrained=str(ckpt))
    assert torch.equal(fine.encoder.frontend.word_embeddings.weight, system.encoder.frontend.word_embeddings.weight)
    with pytest.raises(ValueError, match="do not fit"):
        CodeClassifierSystem(tiny_encoder(vocab=500), pretrained=str(ckpt))


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


def test_keep_best_restores_the_best_validation_round():
    from types import SimpleNamespace

    from tasks.callbacks import KeepBest

    module = torch.nn.Linear(2, 1)
    keep = KeepBest("val/accuracy")
    snapshots = {}
    for step, score in ((10, 0.5), (20, 0.7), (30, 0.6)):
        with torch.no_grad():
            module.weight.fill_(step)
        snapshots[step] = module.weight.clone()
        keep.on_validation_end(SimpleNamespace(sanity_checking=False, global_step=step,
                                               callback_metrics={"val/accuracy": torch.tensor(score)}), module)
    keep.restore(module)
    assert keep.best_step == 20 and keep.best_score == pytest.approx(0.7)
    assert torch.equal(module.weight, snapshots[20])
    assert [s for s, _ in keep.history] == [10, 20, 30]
    with pytest.raises(KeyError, match="val/loss"):
        KeepBest("val/loss", mode="min").on_validation_end(
            SimpleNamespace(sanity_checking=False, global_step=1, callback_metrics={}), module)


def _code_eval():
    return load_script("code_eval")


@pytest.mark.slow
def test_code_eval_selects_lr_on_validation(benchmark_dir, tmp_path):
    """scripts/code_eval.py: with several learning rates each model keeps the one with the best
    validation score, and its test figures are that run's (not the best test figure)."""
    evaluate, merge = _code_eval().evaluate, _code_eval().merge

    bench, tokdir = benchmark_dir
    cfg = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
               max_position_embeddings=128, attention_backend="unpadded")
    res = evaluate(["variable_misuse", "variable_misuse_repair"], bench, tokdir, None, cfg, tmp_path / "eval",
                   steps=3, batch_size=8, max_length=128, max_examples=48, lr=[1e-3, 1e-6], models=("scratch",))
    for task, key in (("variable_misuse", "accuracy"), ("variable_misuse_repair", "joint")):
        row = res["tasks"][task]["scratch"]
        assert [r["lr"] for r in row["sweep"]] == [1e-3, 1e-6]
        best = max(row["sweep"], key=lambda r: r[f"val/{key}"])
        assert row["lr"] == best["lr"] and row["selected_by"] == f"val/{key}"
        assert row[f"test/{key}"] == best[f"test/{key}"]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["settings"]["lr"] == [1e-3, 1e-6]
    assert (tmp_path / "eval" / "results.png").stat().st_size > 0
    # a second run of another model joins the first into one table; other settings refuse to
    lstm = evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "lstm", steps=3, batch_size=8,
                    max_length=128, max_examples=48, lr=1e-3, models=("bilstm",))
    joined = merge([tmp_path / "eval" / "results.json", tmp_path / "lstm" / "results.json"])
    assert joined["tasks"]["variable_misuse"]["bilstm"] == lstm["tasks"]["variable_misuse"]["bilstm"]
    assert joined["tasks"]["variable_misuse"]["scratch"] == res["tasks"]["variable_misuse"]["scratch"]
    # --val-every: the weights of the best validation round (the last step's included) are tested
    sel = evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "sel", steps=5, batch_size=8,
                   max_length=128, max_examples=48, lr=1e-3, models=("scratch",), val_every=2)
    (run,) = sel["tasks"]["variable_misuse"]["scratch"]["sweep"]
    curve = run["val_curve"]
    assert [s for s, _ in curve] == [2, 4, 5]
    assert run["best_step"] == max(curve, key=lambda c: c[1])[0] and run["val/accuracy"] == max(v for _, v in curve)
    assert sel["tasks"]["variable_misuse"]["scratch"]["best_step"] == run["best_step"]
    with pytest.raises(ValueError, match="val_every"):
        merge([tmp_path / "eval" / "results.json", tmp_path / "sel" / "results.json"])
    # a second learning rate of the same model, run apart, joins its sweep and is chosen on validation
    sel2 = evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "sel2", steps=5, batch_size=8,
                    max_length=128, max_examples=48, lr=1e-6, models=("scratch",), val_every=2)
    pooled = merge([tmp_path / "sel" / "results.json", tmp_path / "sel2" / "results.json"])["tasks"]["variable_misuse"]["scratch"]
    runs = sel["tasks"]["variable_misuse"]["scratch"]["sweep"] + sel2["tasks"]["variable_misuse"]["scratch"]["sweep"]
    assert [r["lr"] for r in pooled["sweep"]] == [1e-3, 1e-6]
    best = max(runs, key=lambda r: r["val/accuracy"])
    assert pooled["lr"] == best["lr"] and pooled["test/accuracy"] == best["test/accuracy"]
    with pytest.raises(ValueError, match="twice"):
        merge([tmp_path / "sel" / "results.json", tmp_path / "sel" / "results.json"])
    evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "other", steps=4, batch_size=8,
             max_length=128, max_examples=48, lr=1e-3, models=("bilstm",))
    with pytest.raises(ValueError, match="other settings"):
        merge([tmp_path / "eval" / "results.json", tmp_path / "other" / "results.json"])


def test_code_eval_select_by_classification_judges_the_pointer_as_a_detector(benchmark_dir, tmp_path):
    """--select-by classification: the pointer model's round and learning rate are chosen on
    validation classification accuracy (not joint), the table reports test classification, and a
    metric the task does not log is refused before any training."""
    mod = _code_eval()
    bench, tokdir = benchmark_dir
    cfg = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
               max_position_embeddings=128, attention_backend="unpadded")
    res = mod.evaluate(["variable_misuse_repair"], bench, tokdir, None, cfg, tmp_path / "cls", steps=5, batch_size=8,
                       max_length=128, max_examples=48, lr=[1e-3, 1e-6], models=("scratch",), val_every=2,
                       select_by="classification")
    row = res["tasks"]["variable_misuse_repair"]
    entry = row["scratch"]
    assert entry["selected_by"] == "val/classification" and res["settings"]["select_by"] == "classification"
    for run in entry["sweep"]:
        assert run["val/classification"] == max(v for _, v in run["val_curve"])  # the curve is of classification
    best = max(entry["sweep"], key=lambda r: r["val/classification"])
    assert entry["lr"] == best["lr"] and entry["test/classification"] == best["test/classification"]
    key, values = mod.headline(row)
    assert key == "test/classification" and values["scratch"] == best["test/classification"]
    assert "majority_class" in values  # a detector is compared with always answering the majority label
    assert mod.headline({"scratch": {**entry, "selected_by": "val/joint"}})[0] == "test/joint"
    for task, metric in (("variable_misuse", "classification"), ("variable_misuse_repair", "accuracy")):
        with pytest.raises(ValueError, match=f"not a validation metric of {task}"):
            mod.evaluate([task], bench, tokdir, None, cfg, tmp_path / "bad", steps=1, select_by=metric)
    joint = mod.evaluate(["variable_misuse_repair"], bench, tokdir, None, cfg, tmp_path / "joint", steps=5,
                         batch_size=8, max_length=128, max_examples=48, lr=1e-4, models=("scratch",), val_every=2)
    with pytest.raises(ValueError, match="select_by"):  # runs chosen on different metrics never share a table
        mod.merge([tmp_path / "cls" / "results.json", tmp_path / "joint" / "results.json"])
    assert joint["tasks"]["variable_misuse_repair"]["scratch"]["selected_by"] == "val/joint"


def test_classifier_pooling_ignores_padding():
    """"mean" and "max" pool the real tokens only and "cls" reads position 0: padding a sequence changes none."""
    torch.manual_seed(0)
    for pooling in ("cls", "mean", "max"):
        model = CodeClassifierSystem(tiny_encoder(), pooling=pooling).eval()
        ids = torch.randint(5, 300, (1, 9))
        padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
        mask = torch.arange(13)[None] < 9
        alone = model({"input_ids": ids, "attention_mask": torch.ones(1, 9, dtype=torch.bool)})
        with_pad = model({"input_ids": padded, "attention_mask": mask})
        assert torch.allclose(alone, with_pad, atol=1e-5), pooling
    cls, mean, mx = (CodeClassifierSystem(tiny_encoder(), pooling=p) for p in ("cls", "mean", "max"))
    mean.load_state_dict(cls.state_dict())
    mx.load_state_dict(cls.state_dict())
    batch = {"input_ids": ids, "attention_mask": torch.ones(1, 9, dtype=torch.bool)}
    outs = [m.eval()(batch) for m in (cls, mean, mx)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])
    # "max" is the element-wise maximum of the token states, read through the same head
    h = mx.encode(batch)
    assert torch.allclose(outs[2], mx.head(h.amax(1)).float(), atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        CodeClassifierSystem(tiny_encoder(), pooling="attention")


def test_release_heap_trims_on_schedule(tmp_path):
    import lightning as L

    from tasks.callbacks import ReleaseHeap

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.w(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = ReleaseHeap(every_n_steps=2)
    assert cb._trim is not None  # glibc Linux, as this project's machines
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 4)), batch_size=4)
    L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[cb], default_root_dir=tmp_path).fit(Tiny(), data)
    assert cb.trims == 2  # after steps 2 and 4
    with pytest.raises(ValueError, match="every_n_steps"):
        ReleaseHeap(every_n_steps=0)


def _fake_results(path, pretrained, rows):
    """A results.json as code_eval writes it: ``rows`` maps model -> [(lr, val accuracy, test accuracy)]."""
    select = _code_eval().select
    task = {m: select([{"lr": lr, "val/accuracy": v, "test/accuracy": t, "fit_seconds": 1.0} for lr, v, t in runs], 10)
            for m, runs in rows.items()}
    settings = {"steps": 10, "batch_size": 4, "max_length": 64, "max_examples": 8, "seed": 0,
                "precision": "32-true", "pooling": "cls", "val_every": 5, "pretrained": pretrained}
    path.write_text(json.dumps({"settings": settings, "tasks": {"exception_type": task}}))
    return path


def test_code_eval_merge_takes_chosen_models_and_refuses_mixed_checkpoints(tmp_path):
    """--merge PATH:scratch,bilstm takes only those models from PATH; pretrained rows of two different
    checkpoints never share a table (they would be pooled as if one model)."""
    old = _fake_results(tmp_path / "old.json", "ckpt-2000", {"pretrained": [(3e-4, 0.9, 0.9)],
                                                             "scratch": [(3e-4, 0.4, 0.35)], "bilstm": [(1e-3, 0.5, 0.45)]})
    new = _fake_results(tmp_path / "new.json", "ckpt-4000", {"pretrained": [(3e-4, 0.6, 0.55), (1e-3, 0.7, 0.5)]})
    merge = _code_eval().merge
    with pytest.raises(ValueError, match="different checkpoints"):
        merge([new, old])
    row = merge([new, f"{old}:scratch,bilstm"])
    table = row["tasks"]["exception_type"]
    assert table["pretrained"]["test/accuracy"] == 0.5 and table["pretrained"]["lr"] == 1e-3  # the new run's best val
    assert table["scratch"]["test/accuracy"] == 0.35 and table["bilstm"]["test/accuracy"] == 0.45
    assert row["settings"]["pretrained"] == "ckpt-4000"
    assert row["settings"]["merged_from"][1].endswith(":scratch,bilstm")
    assert "bilstm" not in merge([new, f"{old}:scratch"])["tasks"]["exception_type"]


def test_code_eval_pool_seeds(tmp_path):
    """--pool-seeds: each seed's validation-chosen test figure, their mean and std; files that differ
    in more than the seed, or repeat a seed, are refused."""
    a = _fake_results(tmp_path / "s0.json", "ckpt", {"pretrained": [(3e-4, 0.5, 0.40), (1e-3, 0.6, 0.30)],
                                                      "bilstm": [(1e-3, 0.5, 0.35)]})
    b = _fake_results(tmp_path / "s1.json", "ckpt", {"pretrained": [(3e-4, 0.7, 0.50), (1e-3, 0.6, 0.45)],
                                                      "bilstm": [(1e-3, 0.5, 0.45)]})
    for path, seed in ((a, 0), (b, 1)):
        r = json.loads(path.read_text())
        r["settings"]["seed"] = seed
        path.write_text(json.dumps(r))
    main, pool_seeds = _code_eval().main, _code_eval().pool_seeds
    pooled = pool_seeds([a, b])["tasks"]["exception_type"]
    assert pooled["pretrained"]["per_seed"] == [0.30, 0.50] and pooled["pretrained"]["lr"] == [1e-3, 3e-4]
    assert pooled["pretrained"]["test/accuracy"] == pytest.approx(0.40)
    assert pooled["pretrained"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert pooled["bilstm"]["test/accuracy"] == pytest.approx(0.40)
    with pytest.raises(ValueError, match="twice"):
        pool_seeds([a, a])
    c = _fake_results(tmp_path / "s2.json", "other-ckpt", {"pretrained": [(3e-4, 0.5, 0.4)], "bilstm": [(1e-3, 0.5, 0.4)]})
    with pytest.raises(ValueError, match="more than the seed"):
        pool_seeds([a, c])
    assert main(["--pool-seeds", str(a), str(b), "--out", str(tmp_path / "pooled")]) == 0
    assert json.loads((tmp_path / "pooled" / "results.json").read_text())["settings"]["seed"] == [0, 1]
    assert (tmp_path / "pooled" / "results.png").stat().st_size > 0


def test_code_eval_keeps_the_tested_weights_for_code_predict(benchmark_dir, tmp_path):
    """save_models: each run's folder holds the weights it was tested with and a YAML that rebuilds the
    system; tasks.code_predict.load_finetuned reads both, and testing the rebuilt system gives the
    reported test accuracy again (the validation-chosen round's weights, not the last step's)."""
    from tasks.code_predict import load_finetuned, predict

    mod = _code_eval()
    bench, tokdir = benchmark_dir
    cfg = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
               max_position_embeddings=128, attention_backend="unpadded")
    res = mod.evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "ev", steps=5, batch_size=8,
                       max_length=128, max_examples=48, lr=1e-3, models=("scratch", "bilstm"), val_every=2,
                       save_models=True)
    for model in ("scratch", "bilstm"):
        (run,) = res["tasks"]["variable_misuse"][model]["sweep"]
        folder = Path(run["saved"])
        assert folder == tmp_path / "ev" / "variable_misuse" / model / "lr0.001"
        system, tok, task, max_length = load_finetuned(folder / "config.yaml", folder / "model.safetensors")
        assert task == "variable_misuse" and max_length == 128
        assert isinstance(system.encoder, BiLSTMEncoder) == (model == "bilstm")
        dm = CodeTaskDataModule("variable_misuse", str(bench), str(tokdir), max_length=128, batch_size=8, max_examples=48)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)
        (test,) = trainer.test(system, dm, verbose=False)
        assert round(test["test/accuracy"], 4) == run["test/accuracy"]
        fn = json.loads((bench / "variable_misuse" / "test.jsonl").open().readline())
        (pred,) = predict(system, tok, task, [{"source": fn["source"], "name": fn["function"]}], max_length)
        assert 0.0 <= pred["bug_probability"] <= 1.0


def test_pointer_auroc_ranks_functions_by_the_bug_probability(benchmark_dir, tmp_path):
    """test/auroc: buggy functions ranked above clean ones by 1 - p(no bug), as a brute-force count says."""
    bench, tokdir = benchmark_dir
    dm = CodeTaskDataModule("variable_misuse_repair", str(bench), str(tokdir), max_length=128, batch_size=8,
                            max_examples=64)
    torch.manual_seed(0)
    model = VarMisusePointerSystem(tiny_encoder(), lr=1e-3)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (result,) = trainer.test(model, dm, verbose=False)
    scores, labels = [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            loc, _ = model.eval()(batch)
            scores += (1 - loc.double().softmax(-1)[:, 0]).tolist()
            labels += (batch["error_position"] > 0).long().tolist()
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    expected = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert 0 < len(pos) < len(scores)
    assert result["test/auroc"] == pytest.approx(expected, abs=1e-6)
    assert result["test/auroc"] != pytest.approx(1 - expected, abs=1e-3)  # the direction matters

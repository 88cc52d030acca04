"""Code encoder folders (encoder + tokenizer), code embeddings, the export at the end of fit, `tessera export`
of a code run and `tessera embed` of Python files (functions or files), with its bad inputs."""

import json

import lightning as L
import pytest
import torch
import yaml
from code_fixtures import cubert_vocab_file
from safetensors.torch import load_file

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import CodeTokenizer, embed_code, load_code_encoder, save_code_encoder
from tasks.callbacks import ExportEncoder
from tasks.cli import main as tessera
from tasks.data.code import MaskedCodeDataModule
from tasks.text import MaskedLMSystem

ENCODER = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=128,
               attention_backend="unpadded")


def tiny_encoder(vocab=300):
    torch.manual_seed(0)
    return TokenEncoder(TokenEncoderConfig(vocab_size=vocab, **ENCODER))


def module(n: int, offset: int = 0) -> str:
    parts = []
    for i in range(offset, offset + n):
        parts.append(f"def area_{i}(width, height):\n    total = width * height + {i}\n"
                     f"    if total > {i * 3}:\n        return total - width\n    return 'small' + str(total)\n\n\n")
    return "".join(parts)


SOURCES = [
    "def f(x):\n    return x + 1\n",
    module(6),
    "class A:\n    def g(self, items):\n        for item in items:\n            yield item * 2\n",
    "",  # empty: [CLS] [SEP] only
    "s = 'unterminated\nprint(s)\n",  # the lexer complains; best-effort tokens
    module(1, offset=7),
]


@pytest.fixture(scope="module")
def tokenizer():
    return CodeTokenizer.train([module(20, k) for k in range(3)] + SOURCES, 300)


def test_folder_roundtrip_and_embeddings_match_one_at_a_time(tmp_path, tokenizer):
    enc = tiny_encoder()
    folder = save_code_encoder(enc, tokenizer, tmp_path / "enc", meta={"note": "test"})
    loaded, tok = load_code_encoder(folder)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert tok.vocab_size == tokenizer.vocab_size
    assert tok.encode(SOURCES[1]).ids.tolist() == tokenizer.encode(SOURCES[1]).ids.tolist()
    assert loaded.meta["note"] == "test" and loaded.meta["tokenizer"] == "wordpiece"

    vecs, info = embed_code(loaded, tok, SOURCES, max_length=64, batch_size=4)
    assert vecs.shape == (len(SOURCES), 32) and torch.isfinite(vecs).all()
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(len(SOURCES)))
    # batched by length, returned in input order: each row is what the source gives alone
    for i, src in enumerate(SOURCES):
        alone, _ = embed_code(loaded, tok, [src], max_length=64)
        torch.testing.assert_close(vecs[i], alone[0], atol=1e-5, rtol=1e-5)
    n_long = len(tokenizer.encode(SOURCES[1]).ids)
    assert n_long > 62 and info[1].tokens == n_long and info[1].truncated
    assert not info[0].truncated and info[0].tokens == len(tokenizer.encode(SOURCES[0]).ids)
    assert info[3].tokens == 0 and info[3].error is None
    assert info[4].error is not None  # flagged, still embedded
    # a learned position table caps the length (128 here): cut and flagged, not an error
    capped, info = embed_code(loaded, tok, [SOURCES[1]], max_length=512)
    assert info[0].truncated and torch.isfinite(capped).all()
    # pooling by name; the raw mean is not unit length
    raw, _ = embed_code(loaded, tok, SOURCES[:2], pooling="max", normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="unknown pooling"):
        embed_code(loaded, tok, SOURCES[:1], pooling="median")


def test_folder_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="embedding only"):
        save_code_encoder(tiny_encoder(vocab=100), tokenizer, tmp_path / "small")
    from modalities import save_encoder

    save_encoder(tiny_encoder(), tmp_path / "bare")  # weights without a tokenizer
    with pytest.raises(FileNotFoundError, match="no code tokenizer"):
        load_code_encoder(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_code_encoder(tmp_path / "missing")


def _source_tree(root):
    """Python files to embed: two good ones, a binary one and a Python 2 one (skipped, counted)."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text(module(3))
    (root / "pkg" / "b.py").write_text("def twin(width, height):\n    total = width * height + 0\n    return total\n")
    (root / "bad.py").write_bytes(b"x = 1\x00\n")
    (root / "py2.py").write_text("print 'hello'\n")
    return root


@pytest.mark.slow
def test_fit_exports_the_encoder_and_tessera_export_and_embed_read_it(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = []
    for p in range(6):
        (corpus / f"m{p}.py").write_text(module(8, offset=10 * p))
        rows.append({"path": str(corpus / f"m{p}.py"), "package": f"p{p}", "split": "valid" if p == 0 else "train"})
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = dict(corpus=str(corpus), vocab_size=300, max_length=64, batch_size=8, cache_dir=str(tmp_path / "cache"))
    dm = MaskedCodeDataModule(**data)
    system = MaskedLMSystem(tiny_encoder(), lr=1e-3)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path / "run", use_distributed_sampler=False, limit_val_batches=1,
                        enable_model_summary=False, callbacks=[ExportEncoder()])
    trainer.fit(system, dm)
    encoder, tok = load_code_encoder(tmp_path / "run" / "encoder")  # weights and the run's tokenizer, one folder
    for k, v in system.encoder.state_dict().items():
        assert torch.equal(v, encoder.state_dict()[k]), k
    assert tok.encode(module(1)).ids.tolist() == dm.code_tokenizer.encode(module(1)).ids.tolist()
    assert json.loads((tmp_path / "run" / "encoder" / "config.json").read_text())["meta"]["modality"] == "code"

    # tessera export of the run (config.yaml + a checkpoint): the same encoder folder, tokenizer included
    log = tmp_path / "log"
    (log / "checkpoints").mkdir(parents=True)
    trainer.save_checkpoint(log / "checkpoints" / "last.ckpt")
    cfg = {"model": {"class_path": "tasks.text.MaskedLMSystem", "init_args": {"encoder": {
               "class_path": "modalities.TokenEncoder", "init_args": {"config": {"vocab_size": 300, **ENCODER}}}}},
           "data": {"class_path": "tasks.data.code.MaskedCodeDataModule", "init_args": data}}
    (log / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert tessera(["export", str(log), str(tmp_path / "exp")]) == 0
    again, tok2 = load_code_encoder(tmp_path / "exp")
    for k, v in system.encoder.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert tok2.encode(module(1)).ids.tolist() == tok.encode(module(1)).ids.tolist()
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["meta"]["modality"] == "code"

    # tessera embed of a folder: bad files are counted, not fatal; the vectors are the library's
    src = _source_tree(tmp_path / "src")
    out = tmp_path / "emb"
    capsys.readouterr()
    assert tessera(["embed", "--encoder", str(tmp_path / "exp"), str(src), "--out", str(out), "--quiet",
                    "--query", f"{src / 'pkg' / 'b.py'}:twin", "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "code" and summary["count"] == 4 and summary["dim"] == 32
    assert summary["skipped"] == {"source contains null bytes (a binary file, or UTF-16 without a BOM?)": 1,
                                  "no function (or does not parse)": 1}
    index = [json.loads(line) for line in (out / "index.jsonl").open()]
    assert [r["name"] for r in index] == ["area_0", "area_1", "area_2", "twin"]
    assert index[3]["id"].endswith("b.py:twin") and index[3]["line"] == 1
    vecs = load_file(str(out / "embeddings.safetensors"))["embeddings"]
    ref, _ = embed_code(again, tok, [module(1, 2).split("\n\n\n")[0] + "\n"], max_length=512)
    torch.testing.assert_close(vecs[2], ref[0], atol=1e-5, rtol=1e-5)
    hits = json.loads((out / "neighbours.json").read_text())["neighbours"]
    assert hits[0]["id"].endswith("b.py:twin") and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "nearest to" in printed
    # --unit file: one vector per readable file (the Python 2 file too: the lexer's best-effort tokens)
    assert tessera(["embed", "--encoder", str(tmp_path / "exp"), str(src), "--out", str(tmp_path / "files"),
                    "--unit", "file", "--quiet"]) == 0
    assert json.loads((tmp_path / "files" / "summary.json").read_text())["count"] == 3


def test_embed_code_matches_embed_code_and_reads_a_cubert_folder(tmp_path, tokenizer):
    """The code embedder gives embed_code's vectors; a CuBERT folder (HF BERT + vocab.txt) embeds as code."""
    from tasks.embed.code import same_file_at_1

    folder = save_code_encoder(tiny_encoder(), tokenizer, tmp_path / "enc", meta={"modality": "code"})
    src = _source_tree(tmp_path / "src")
    assert tessera(["embed", "--encoder", str(folder), str(src), "--out", str(tmp_path / "e"), "--quiet"]) == 0
    vecs = load_file(str(tmp_path / "e" / "embeddings.safetensors"))["embeddings"]
    index = [json.loads(line) for line in (tmp_path / "e" / "index.jsonl").open()]
    enc, tok = load_code_encoder(folder)
    from tasks.embed.code import collect

    sources, rows, _ = collect([str(src)])
    ref, _ = embed_code(enc, tok, sources)
    assert [r["name"] for r in rows] == [r["name"] for r in index]
    torch.testing.assert_close(vecs, ref, atol=1e-5, rtol=1e-5)
    # same_file_at_1 is bounded: a sample of max_queries functions, each against all
    rows = [{"path": f"f{i // 2}"} for i in range(10)]
    v = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    full = same_file_at_1(v, rows)
    assert full is not None and 0 <= same_file_at_1(v, rows, max_queries=3) <= 1
    sims = v @ v.T
    sims.fill_diagonal_(-2)
    assert full == pytest.approx(sum(rows[int(sims[i].argmax())]["path"] == rows[i]["path"] for i in range(10)) / 10)

    transformers = pytest.importorskip("transformers")
    cub = tmp_path / "cubert"
    cub.mkdir()
    n = len(cubert_vocab_file(cub / "vocab.txt").read_text().splitlines())
    cfg = transformers.BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(cub, safe_serialization=True)
    code = tmp_path / "code"
    code.mkdir()
    (code / "f.py").write_text("def foo_bar(x, y):\n    return x + y\n")
    assert tessera(["embed", "--encoder", str(cub), str(code), "--out", str(tmp_path / "c"), "--quiet",
                    "--modality", "code"]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["count"] == 1


@pytest.mark.parametrize("case", ["missing path", "empty folder", "another modality", "corrupt weights",
                                  "missing weights", "unknown option"])
def test_embed_code_bad_inputs_exit_2_with_one_line(tmp_path, tokenizer, capsys, case):
    """Each mistake: exit status 2 and one line on stderr naming the input, no traceback."""
    folder = save_code_encoder(tiny_encoder(), tokenizer, tmp_path / "enc", meta={"modality": "code"})
    src = _source_tree(tmp_path / "src")
    inputs, extra, named = [str(src)], [], None
    if case == "missing path":
        inputs = [named := str(tmp_path / "nowhere")]
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        inputs = [named := str(tmp_path / "empty")]
    elif case == "another modality":  # text files given to a code encoder
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "a.txt").write_text("hello\n")
        inputs = [named := str(tmp_path / "notes")]
    elif case == "corrupt weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 16)
        named = str(folder)
    elif case == "missing weights":
        (folder / "model.safetensors").unlink()
        named = str(folder)
    else:
        extra, named = ["--bogus"], "--bogus"
    rc = tessera(["embed", "--encoder", str(folder), *inputs, "--out", str(tmp_path / "o"), "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err)
    if case != "unknown option":
        assert len(err) == 1

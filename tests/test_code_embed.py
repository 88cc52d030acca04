"""Code encoder folders (encoder + tokenizer), code embeddings, the export callback and scripts."""

import json

import lightning as L
import pytest
import torch
import yaml
from conftest import load_script

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import CodeTokenizer, embed_code, load_code_encoder, save_code_encoder
from tasks.callbacks import ExportEncoder
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


@pytest.mark.slow
def test_fit_exports_the_encoder_and_the_scripts_export_and_embed(tmp_path, capsys):
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

    # the script: the same export from a saved checkpoint and the pretraining YAML (tokenizer from its data section)
    ckpt = tmp_path / "mlm.ckpt"
    trainer.save_checkpoint(ckpt)
    cfg = {"model": {"init_args": {"encoder": {"init_args": {"config": {"vocab_size": 300, **ENCODER}}}}},
           "data": {"init_args": data}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    export = load_script("code_export")
    assert export.main(["--ckpt", str(ckpt), "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "exp")]) == 0
    again, _ = load_code_encoder(tmp_path / "exp")
    for k, v in system.encoder.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert export.main(["--untrained", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "init")]) == 0
    init, _ = load_code_encoder(tmp_path / "init")
    assert init.meta["source"] == "untrained (seed 0)"
    assert not torch.equal(init.state_dict()["frontend.word_embeddings.weight"], again.state_dict()["frontend.word_embeddings.weight"])
    assert export.main(["--ckpt", str(tmp_path / "nope.ckpt"), "--config", str(tmp_path / "cfg.yaml"),
                        "--out", str(tmp_path / "x")]) == 2

    # embedding a folder: bad files are counted, not fatal; neighbours by cosine
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text(module(3))
    (src / "pkg" / "b.py").write_text("def twin(width, height):\n    total = width * height + 0\n    return total\n")
    (src / "bad.py").write_bytes(b"x = 1\x00\n")
    (src / "py2.py").write_text("print 'hello'\n")
    embed = load_script("code_embed")
    out = tmp_path / "emb"
    capsys.readouterr()
    assert embed.main(["--encoder", str(tmp_path / "exp"), "--paths", str(src), "--out", str(out),
                       "--precision", "32", "--query", "b.py:twin", "--top", "2"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["embedded"] == 4 and summary["dim"] == 32
    assert summary["skipped_files"] == {"source contains null bytes (a binary file, or UTF-16 without a BOM?)": 1,
                                        "no function (or does not parse)": 1}
    index = [json.loads(line) for line in (out / "index.jsonl").open()]
    assert [r["name"] for r in index] == ["area_0", "area_1", "area_2", "twin"]
    assert "nearest to" in printed and printed.count("area_") == 2
    # the saved vectors are the library's, row for row
    vecs = embed.load_file(str(out / "embeddings.safetensors"))["vectors"]
    ref, _ = embed_code(again, tok, [module(1, 2).split("\n\n\n")[0] + "\n"], max_length=512)
    torch.testing.assert_close(vecs[2], ref[0], atol=1e-5, rtol=1e-5)
    # the label-free checks, by hand: nearest neighbours of a.py's three functions, mean pairwise cosine
    sims = vecs @ vecs.T
    off = ~torch.eye(4, dtype=torch.bool)
    nearest = sims.masked_fill(~off, -2).argmax(1)
    assert summary["same_file_at_1"] == pytest.approx(sum(int(nearest[i]) < 3 for i in range(3)) / 3, abs=1e-4)
    assert summary["mean_cosine"] == pytest.approx(float(sims[off].mean()), abs=1e-4)
    # searching a written index; an ambiguous or unknown query is an error naming the way out
    assert embed.main(["--index", str(out), "--query", "area_1", "--top", "1"]) == 0
    assert embed.main(["--index", str(out), "--query", "nothing_here"]) == 2
    assert "PATH:NAME" in capsys.readouterr().err

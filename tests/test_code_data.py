"""Code data modules: logical-line chunks, featurisation (sites, pointer targets), and data that prepares
itself (corpus, tokenizer, benchmark built by prepare_data, atomically)."""

import json

import numpy as np
import pytest
from code_fixtures import write_manifest_corpus

from modalities.code import load_code_tokenizer
from tasks.data.code import CodeTaskDataModule, chunk_logical_lines, featurise


def test_chunk_logical_lines():
    ids = np.array([7, 7, 1, 7, 1, 7, 7, 7, 7, 7, 1, 7])  # 1 = NEWLINE
    chunks = chunk_logical_lines(ids, 1, 5)
    assert [c.tolist() for c in chunks] == [[7, 7, 1, 7, 1], [7, 7, 7, 7, 7], [1, 7]]
    assert np.array_equal(np.concatenate(chunks), ids)


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


def test_task_data_prepares_tokenizer_and_benchmark_on_an_empty_cache(tmp_path):
    """CodeTaskDataModule.prepare_data builds the tokenizer (as the masked-LM run on the same corpus
    would) and the benchmark task it names; a second call rebuilds nothing; a leftover .partial
    from an interrupted build is replaced, never read."""
    from tasks.data.code import MaskedCodeDataModule

    corpus = write_manifest_corpus(tmp_path / "corpus")
    bench = tmp_path / "bench"
    (bench / "variable_misuse").mkdir(parents=True)
    (bench / "variable_misuse" / "train.jsonl.partial").write_text("{half a line")
    kw = dict(corpus=str(corpus), vocab_size=300, cache_dir=str(tmp_path / "cache"))
    dm = CodeTaskDataModule("variable_misuse", str(bench), max_length=128, batch_size=4, **kw)
    assert not dm.tokenizer_file.exists()
    dm.prepare_data()
    assert dm.tokenizer_file == MaskedCodeDataModule(**kw).tokenizer_file and dm.tokenizer_file.is_dir()
    files = {p: p.stat().st_mtime_ns for p in [*bench.rglob("*.jsonl"), dm.tokenizer_file / "tokenizer.json"]}
    assert len(files) == 4 and not list(bench.rglob("*.partial")) and not list(tmp_path.rglob("*.partial"))
    dm.prepare_data()
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing rebuilt
    dm.setup("fit")
    assert dm.stats["train"]["examples"] > 0 and dm.num_classes == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4


def test_task_data_names_a_missing_tokenizer(tmp_path):
    corpus = write_manifest_corpus(tmp_path / "corpus")
    dm = CodeTaskDataModule("variable_misuse", str(tmp_path / "bench"), tokenizer=str(tmp_path / "no_tok"),
                            corpus=str(corpus), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="no_tok"):
        dm.prepare_data()
    with pytest.raises(ValueError, match="unknown task"):
        CodeTaskDataModule("no_such_task")

"""Code data modules: logical-line chunks, featurisation (sites, pointer targets), and data that prepares
itself (corpus, tokenizer, benchmark built by prepare_data, atomically)."""

import json

import numpy as np
import pytest
from code_fixtures import make_functions, write_benchmark_dir

from modalities.code import load_code_tokenizer
from tasks.data.code import chunk_logical_lines, featurise


@pytest.fixture(scope="module")
def functions():
    return make_functions()


@pytest.fixture
def benchmark_dir(tmp_path, functions):
    return write_benchmark_dir(tmp_path, functions)

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

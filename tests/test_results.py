"""docs/results.md is generated from results/*.json, and a test fails when the page is stale."""

import json

import pytest

from tasks import results


def test_the_results_page_is_generated_from_the_json():
    assert results.PAGE.read_text() == results.render(), "docs/results.md is stale: run `python -m tasks.results`"


def test_a_changed_result_makes_the_page_stale(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"title": "Speed", "command": "python scripts/bench.py",
                                                     "rows": [{"model": "ours", "tok/s": 100.0}]}))
    before = results.render(tmp_path)
    assert "| ours | 100 |" in before and "Command: `python scripts/bench.py`" in before
    (tmp_path / "bench.json").write_text(json.dumps({"title": "Speed", "rows": [{"model": "ours", "tok/s": 90.0}]}))
    assert results.render(tmp_path) != before


def test_the_demo_summary_renders_with_its_verdicts(tmp_path):
    part = {"part": "recsys", "task": "NDCG@10", "model": {"name": "BERT4Rec", "value": 0.06},
            "baseline": {"name": "MostPopular", "value": 0.045}, "higher_is_better": True, "seconds": 100.2,
            "note": "prefix recipe"}
    lower = {**part, "part": "text", "model": {"name": "MLM", "value": 3.0}, "baseline": {"name": "unigram", "value": 5.0},
             "higher_is_better": False}
    (tmp_path / "demo.json").write_text(json.dumps({"title": "demo", "parts": [part, lower, {"part": "x", "error": "boom"}]}))
    page = results.render(tmp_path)
    assert page.count("beats baseline") == 2 and "failed" in page and "- recsys: prefix recipe" in page


def test_a_malformed_result_file_is_named(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        results.render(tmp_path)

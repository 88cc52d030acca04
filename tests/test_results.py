"""docs/results.md is generated from results/*.json, and a test fails when the page is stale."""

import json

import pytest

from tasks import results


def test_the_results_page_and_the_readme_table_are_generated_from_the_json():
    assert results.PAGE.read_text() == results.render(), "docs/results.md is stale: run `python -m tasks.results`"
    readme = results.README.read_text()
    assert results.render_readme(readme) == readme, "README.md's headline table is stale: run `python -m tasks.results`"


def test_the_readme_block_follows_the_demo_json(tmp_path):
    part = {"part": "text", "task": "held-out masked-token loss", "model": {"name": "MLM", "value": 2.5},
            "baseline": {"name": "unigram", "value": 5.0}, "higher_is_better": False, "seconds": 90}
    (tmp_path / "demo.json").write_text(json.dumps({"title": "demo", "parts": [part]}))
    text = f"intro\n{results.BEGIN}\nold table\n{results.END}\noutro\n"
    out = results.render_readme(text, tmp_path)
    assert "old table" not in out and "| text | held-out masked-token loss |" in out and out.endswith("outro\n")


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


def test_a_benchmarks_own_record_is_rendered_as_its_figures(tmp_path):
    from tasks.results import render

    (tmp_path / "bench.json").write_text(json.dumps({
        "question": "A vs B", "commands": "python scripts/bench_x.py",
        "results": {"features": {"speedup": 1.25, "seconds": [1.0, 2.0]}}, "curve": list(range(50))}))
    page = render(tmp_path)
    assert "## A vs B" in page and "`python scripts/bench_x.py`" in page
    assert "| results.features.speedup | 1.25 |" in page
    assert "| results.features.seconds | 1, 2 |" in page and "| curve | (50 values) |" in page


def test_a_recommender_benchmark_renders_as_models_by_protocols(tmp_path):
    from tasks.results import render

    metrics = {"ndcg@10": 0.07, "hr@10": 0.14}
    (tmp_path / "rank.json").write_text(json.dumps({
        "command": "python scripts/bench_recsys.py", "budget_seconds": 45.0, "loadavg": {"before": [2.0, 1.0, 1.0]},
        "test": {"tessera-sasrec": {"full": metrics, "pop100": {"ndcg@10": 0.2, "hr@10": 0.4}},
                 "MostPopular": {"full": {"ndcg@10": 0.045, "hr@10": 0.086}}},
        "targets": {"above_mostpop": True}}))
    page = render(tmp_path)
    assert "| model | NDCG@10 full | NDCG@10 pop100 | HR@10 full |" in page
    assert "| tessera-sasrec | 0.07 | 0.2 | 0.14 |" in page and "| MostPopular | 0.045 |  | 0.086 |" in page
    assert "budget seconds 45" in page and "load average before 2" in page and "above_mostpop = True" in page

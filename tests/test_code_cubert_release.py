"""CuBERT's released benchmark files (function / label / info records; the repair task's
pre-tokenised function with error-location / candidate / target masks) and ETH Py150 Open's
manifests, read in their exact public schemas, mapped onto this project's labels and pointers;
bad records skipped, counted and named; `tessera eval code` and `tessera prepare code-py150` on them."""

import json

import pytest
import yaml
from code_fixtures import TINY, cubert_vocab_file

from modalities.code import CodeTokenizer, load_code_tokenizer
from modalities.code.cubert_release import (
    EXCEPTION_LABELS,
    RecordStats,
    read_release_split,
    subtoken_words,
)
from tasks.cli import main as tessera
from tasks.data.code import featurise, featurise_tokens, read_split

# def foo_bar(x, y): return x + x   -- the last x should be y (a variable misuse)
TOKENS = ["def_", "foo", "\\ubar_", "(_", "x_", ",_", "y_", ")_", ":_", "return_", "x_", "+_", "x_"]


def _mask(n, ones):
    return [int(i in ones) for i in range(len(TOKENS) if n is None else n)]


def repair_record(buggy=True):
    return {"function": TOKENS, "error_location_mask": _mask(None, {12} if buggy else {0}),
            "candidate_mask": _mask(None, {4, 6, 10, 12}), "target_mask": _mask(None, {6} if buggy else set()),
            "provenance": "ETHPy150Open dataset/foo.py foo_bar " + ("12/6 `y` -> `x`" if buggy else "original")}


def write_shards(folder, task_dir, split, records, shards=1):
    folder = folder / task_dir
    folder.mkdir(parents=True, exist_ok=True)
    per = (len(records) + shards - 1) // shards
    for k in range(shards):
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records[k * per:(k + 1) * per]]
        (folder / f"{split}.jsontxt-{k:05d}-of-{shards:05d}").write_text("".join(line + "\n" for line in lines))


def test_classification_records_map_upstream_labels_onto_ours_and_bad_ones_are_counted_by_field(tmp_path):
    good = {"function": "def f(a, b):\n    return a + a\n", "label": "Variable misuse",
            "info": "ETHPy150Open dataset/x.py f `b` -> `a`"}
    clean = {**good, "label": "Correct", "info": "... original"}
    write_shards(tmp_path, "variable_misuse_datasets", "train",
                 [good, clean, {"label": "Correct", "info": ""}, {**good, "label": "Buggy"}, "not json {", [1, 2]], shards=2)
    (tmp_path / "variable_misuse_datasets" / "train.jsontxt-00000-of-00001.githubcommits").write_text("[1]\n")
    stats = RecordStats(unit="examples")
    rows = read_release_split(tmp_path, "variable_misuse", "train", stats)
    assert [(r["label"], r["label_name"]) for r in rows] == [(1, "Variable misuse"), (0, "Correct")]
    assert stats.files == 2 and stats.records == 2
    assert stats.skipped["function: missing"] == 1 and stats.skipped["<line>: not JSON"] == 1
    assert any(k.startswith("label:") for k in stats.skipped) and sum(stats.skipped.values()) == 4
    assert "train.jsontxt-00000-of-00002:3: field 'function'" in stats.examples[0]
    # exception: the upstream label list, in its order; docstring: Incorrect = 1 (ours: another function's docstring)
    write_shards(tmp_path, "exception_datasets", "dev", [{"function": "def f():\n  try: g()\n  except __HOLE__: pass\n",
                                                          "label": "KeyError", "info": "i"}])
    (ex,) = read_release_split(tmp_path, "exception_type", "valid")
    assert ex["label"] == EXCEPTION_LABELS.index("KeyError") == 1
    write_shards(tmp_path, "function_docstring_datasets", "eval",
                 [{"function": "def f():\n  pass\n", "docstring": "Does f.", "label": "Incorrect", "info": "i"},
                  {"function": "def f():\n  pass\n", "label": "Correct", "info": "i"}])
    st = RecordStats()
    (doc,) = read_release_split(tmp_path, "function_docstring", "test", st)
    assert doc["label"] == 1 and doc["docstring"] == "Does f." and st.skipped == {"docstring: missing": 1}


def test_repair_masks_become_pointer_positions_after_cls_with_cubert_vocab_and_cut_off_bugs_are_dropped(tmp_path):
    bad_len = {**repair_record(), "candidate_mask": [0, 1]}
    two_errors = {**repair_record(), "error_location_mask": _mask(None, {3, 12})}
    free_with_target = {**repair_record(False), "target_mask": _mask(None, {6})}
    write_shards(tmp_path, "variable_misuse_repair_datasets", "train",
                 [repair_record(), repair_record(False), bad_len, two_errors, free_with_target])
    stats = RecordStats()
    rows = read_split(tmp_path, "variable_misuse_repair", "train", stats=stats)
    assert len(rows) == 2 and stats.records == 2
    assert set(stats.skipped) == {"candidate_mask: has 2 entries for 13 tokens of 'function'",
                                  "error_location_mask: has 2 ones; exactly one is set in every example",
                                  "target_mask: has targets in a bug-free example (error_location_mask at 0)"}
    tok = load_code_tokenizer(cubert_vocab_file(tmp_path / "vocab.txt"))
    buggy = featurise(rows[0], "variable_misuse_repair", tok, 64)
    ids = buggy["input_ids"].tolist()
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and len(ids) == len(TOKENS) + 2
    assert [tok.vocab.id_to_token(i) for i in ids[1:-1]] == TOKENS  # the release's subtokens are the ids
    assert buggy["label"] == 1 and buggy["error_position"] == 13
    assert buggy["targets"].tolist() == [7] and buggy["candidates"].tolist() == [5, 7, 11, 13]
    free = featurise(rows[1], "variable_misuse_repair", tok, 64)
    assert free["label"] == 0 and free["error_position"] == 0 and free["targets"].tolist() == []
    assert featurise(rows[0], "variable_misuse_repair", tok, 12) is None  # the bug lies past max_length
    assert featurise(rows[1], "variable_misuse_repair", tok, 12)["error_position"] == 0


def test_repair_subtokens_are_rejoined_into_words_for_another_vocabulary(tmp_path):
    assert [w for w, _ in subtoken_words(TOKENS)][:3] == ["def", "foo_bar", "("]
    assert subtoken_words(TOKENS)[1] == ("foo_bar", 1) and subtoken_words(TOKENS)[-1] == ("x", 12)
    tok = CodeTokenizer.train(["def foo_bar(x, y):\n    return x + y\n"] * 4, 120)
    row = featurise_tokens(
        {"tokens": TOKENS, "error_location": 12, "candidates": [4, 6, 10, 12], "targets": [6]}, tok, 64)
    ids = row["input_ids"].tolist()
    assert tok.vocab.id_to_token(ids[row["error_position"]]) == "x"
    assert [tok.vocab.id_to_token(ids[p]) for p in row["targets"].tolist()] == ["y"]
    assert [tok.vocab.id_to_token(ids[p]) for p in row["candidates"].tolist()] == ["x", "y", "x", "x"]


def _tiny_config(tmp_path):
    cfg = {"model": {"init_args": {"encoder": {"init_args": {"config": {**TINY, "vocab_size": 40}}}}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_eval_code_fine_tunes_on_a_cubert_release_folder_and_reports_what_it_skipped(tmp_path, capsys):
    rel = tmp_path / "cubert"
    for split in ("train", "dev", "eval"):
        write_shards(rel, "variable_misuse_repair_datasets", split,
                     [repair_record(), repair_record(False)] * 4 + ["{broken"])
    vocab = cubert_vocab_file(tmp_path / "vocab.txt")
    out = tmp_path / "eval"
    assert tessera(["eval", "code", "--benchmark", str(rel), "--tasks", "variable_misuse_repair", "--models", "scratch",
                    "--steps", "2", "--batch-size", "4", "--max-length", "32", "--tokenizer", str(vocab),
                    "--config", str(_tiny_config(tmp_path)), "--no-save-models", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["tasks"]["variable_misuse_repair"]
    assert res["data"]["test"]["examples"] == 8 and res["data"]["test"]["labels"] == {"1": 4, "0": 4}
    assert res["data"]["train"]["read"]["skipped"] == {"<line>: not JSON": 1}
    assert 0.0 <= res["scratch"]["test/joint"] <= 1.0
    assert "skipped bad records" in capsys.readouterr().out


def test_eval_code_names_the_shard_and_field_when_no_record_fits_and_a_missing_split(tmp_path, capsys):
    rel = tmp_path / "cubert"
    write_shards(rel, "variable_misuse_datasets", "train", [{"function": "def f(): pass", "label": 3, "info": ""}])
    write_shards(rel, "variable_misuse_datasets", "dev", [{"function": "def f(): pass", "label": "Correct", "info": ""}])
    write_shards(rel, "variable_misuse_datasets", "eval", [{"function": "def f(): pass", "label": "Correct", "info": ""}])
    vocab = cubert_vocab_file(tmp_path / "vocab.txt")
    args = ["eval", "code", "--benchmark", str(rel), "--models", "scratch", "--steps", "1", "--tokenizer", str(vocab),
            "--config", str(_tiny_config(tmp_path)), "--quiet", "--out", str(tmp_path / "o")]
    assert tessera([*args, "--tasks", "variable_misuse"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.jsontxt-00000-of-00001:1" in err and "'label'" in err
    assert tessera([*args, "--tasks", "swapped_operands"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "swapped_operands_datasets/train.jsontxt" in err
    assert "Traceback" not in err


def test_prepare_code_py150_turns_eth_manifests_into_a_corpus_with_the_published_split(tmp_path, capsys):
    root, man = tmp_path / "py150", tmp_path / "eth"
    man.mkdir()
    src = "def f(a, b):\n    return a - b\n"
    for i, rel in enumerate(["alice/proj/a.py", "alice/proj/b.py", "bob/lib/c.py", "carol/x/d.py"]):
        path = root / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src.replace("a - b", f"a - b * {i}"))
    (root / "data" / "carol/x/bad.py").write_bytes(b"def f(:\n  \x00\n")
    (man / "train__manifest.json").write_text(json.dumps([{"filepath": "alice/proj/a.py", "license": "mit"},
                                                         {"filepath": "alice/proj/b.py", "license": "mit"},
                                                         {"filepath": "gone/repo/z.py", "license": "mit"},
                                                         {"license": "mit"}]))
    (man / "dev__manifest.json").write_text(json.dumps([{"filepath": "bob/lib/c.py", "license": "apache-2.0"}]))
    (man / "eval__manifest.json").write_text(json.dumps([{"filepath": "carol/x/d.py", "license": "bsd-3-clause"},
                                                        {"filepath": "carol/x/bad.py", "license": "mit"}]))
    out = tmp_path / "corpus"
    assert tessera(["prepare", "code-py150", "--manifests", str(man), "--root", str(root), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["package"], r["split"], r["licence"]) for r in rows] == [
        ("alice/proj", "train", "mit"), ("alice/proj", "train", "mit"), ("bob/lib", "valid", "apache-2.0"),
        ("carol/x", "test", "bsd-3-clause")]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped"] == {"listed file not under the root": 1, "not Python 3 (does not lex)": 1,
                                "train__manifest.json: entry without a 'filepath' string": 1}
    # the manifest folder itself is not a corpus: the error names the converter
    assert tessera(["prepare", "code-benchmark", "--corpus", str(man), "--out", str(tmp_path / "b")]) == 2
    assert "code-py150" in capsys.readouterr().err
    assert tessera(["prepare", "code-py150", "--manifests", str(man), "--root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--root" in err
    (man / "dev__manifest.json").write_text("{not json")
    assert tessera(["prepare", "code-py150", "--manifests", str(man), "--root", str(root), "--out", str(out)]) == 2
    assert "dev__manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("records", [[], ["", "   "]])
def test_an_empty_release_shard_is_an_error_naming_it(tmp_path, records):
    write_shards(tmp_path, "swapped_operands_datasets", "train", records)
    with pytest.raises(ValueError, match="train.jsontxt-00000-of-00001: no records"):
        read_release_split(tmp_path, "swapped_operands", "train")


def test_code_misuse_refuses_the_pre_tokenised_release_repair_task_with_one_line(tmp_path, capsys):
    write_shards(tmp_path / "rel", "variable_misuse_repair_datasets", "train", [repair_record()])
    assert tessera(["eval", "code-misuse", "--mlm", str(tmp_path / "none"), "--benchmark", str(tmp_path / "rel"),
                    "--tasks", "variable_misuse_repair"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pre-tokenised" in err


def test_py150_original_lists_resolve_under_the_archive_root_with_a_stable_valid_slice(tmp_path):
    from modalities.code.py150 import manifest_kind, py150_rows
    from modalities.stats import ReadStats

    root = tmp_path / "py150"
    train = [f"data/user{i}/repo{i}/m{i}.py" for i in range(30)]
    for i, rel in enumerate([*train, "data/zed/lib/t.py"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"def f{i}(a):\n    return a + {i}\n")
    (tmp_path / "python100k_train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "python50k_eval.txt").write_text("data/zed/lib/t.py\ndata/gone/x/y.py\n")
    assert manifest_kind(tmp_path) == "py150"
    stats = ReadStats()
    rows = py150_rows(tmp_path, root, stats)
    assert stats.skipped == {"listed file not under the root": 1}
    by = {r["package"]: r["split"] for r in rows}
    assert by["zed/lib"] == "test" and set(by.values()) == {"train", "valid", "test"}
    assert [r["split"] for r in py150_rows(tmp_path, root)] == [r["split"] for r in rows]  # stable

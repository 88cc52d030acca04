"""The CuBERT benchmark generator and `tessera prepare code-benchmark` (tasks.prepare.code.write_benchmark)."""

import ast
import json

import pytest
from code_fixtures import make_functions, module_source, write_manifest_corpus

from modalities.code import HOLE, TASKS, exception_vocabulary, generate
from tasks.cli import main as tessera
from tasks.prepare.code import write_benchmark


@pytest.fixture(scope="module")
def functions():
    return make_functions()


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
    """write_benchmark(extra_train=...) (--extra-train): a second corpus adds training functions; the valid and
    test examples are byte-identical to those written without it, and a held-out function copied into
    the extra corpus (reformatted, with a comment) never reaches the training split."""
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
    plain = write_benchmark(main, tmp_path / "plain", tasks, progress=False)
    more = write_benchmark(main, tmp_path / "more", tasks, extra_train=extra, progress=False)
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


def test_prepare_code_benchmark_builds_tasks_and_refuses_other_settings(tmp_path, capsys):
    """`tessera prepare code-benchmark`: the tasks asked for, atomically; a second task joins the same
    folder; the same folder with other settings is refused (one line, exit 2)."""
    corpus = write_manifest_corpus(tmp_path / "corpus")
    out = tmp_path / "bench"
    base = ["prepare", "code-benchmark", "--corpus", str(corpus), "--out", str(out), "--quiet"]
    assert tessera([*base, "--tasks", "variable_misuse"]) == 0
    assert tessera([*base, "--tasks", "swapped_operands"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["tasks"]) == {"variable_misuse", "swapped_operands"}
    for task in stats["tasks"]:
        for split in ("train", "valid", "test"):
            n = sum(1 for _ in (out / task / f"{split}.jsonl").open())
            assert n == stats["tasks"][task][split]["examples"]
    assert not list(out.rglob("*.partial"))
    capsys.readouterr()
    assert tessera([*base, "--tasks", "variable_misuse", "--seed", "1"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing corpus", "empty corpus folder", "missing extra corpus", "bad max-files",
                                  "unknown task", "unknown option"])
def test_prepare_code_benchmark_bad_inputs_exit_2_with_one_line(tmp_path, capsys, case):
    corpus = write_manifest_corpus(tmp_path / "corpus")
    args = ["--corpus", str(corpus), "--out", str(tmp_path / "bench"), "--tasks", "variable_misuse"]
    if case == "missing corpus":
        args[1] = named = str(tmp_path / "nowhere")
    elif case == "empty corpus folder":
        (tmp_path / "empty").mkdir()
        args[1], named = str(tmp_path / "empty"), "manifest.jsonl"
    elif case == "missing extra corpus":
        args, named = [*args, "--extra-train", str(tmp_path / "extra")], str(tmp_path / "extra")
    elif case == "bad max-files":
        args, named = [*args, "--max-files", "0"], "--max-files"
    elif case == "unknown task":
        args, named = [*args[:-1], "no_such_task"], "no_such_task"
    else:
        args, named = [*args, "--bogus"], "--bogus"
    rc = tessera(["prepare", "code-benchmark", *args, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err)
    if case not in ("unknown option", "unknown task"):
        assert len(err) == 1

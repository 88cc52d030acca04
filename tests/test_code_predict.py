"""A fine-tuned bug detector applied to plain functions: tasks.code_predict and `tessera eval code-predict`."""

import json

import pytest
import torch
import yaml
from code_fixtures import write_run

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import CodeTokenizer, local_variables
from tasks.cli import main as tessera
from tasks.code import CodeClassifierSystem, VarMisusePointerSystem
from tasks.code_predict import load_finetuned, predict
from tasks.data.code import collate_examples, featurise

ENCODER = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
               max_position_embeddings=128, attention_backend="unpadded")

FUNCTIONS = [
    "def area(width, height):\n    total = width * height\n    if total > 10:\n        return total - width\n    return height\n",
    "def const():\n    return 42\n",  # one local at most: nothing to misuse
    "def merge(left, right, key):\n    out = []\n    for item in left:\n        out.append(item[key])\n"
    "    for item in right:\n        out.append(item)\n    return out\n",
    "def scale(values, factor):\n    return [v * factor for v in values]\n",
]


@pytest.fixture
def finetuned(tmp_path):
    """(run folder, checkpoint, system) for a pointer and a classifier system at initialisation."""
    tok = CodeTokenizer.train(FUNCTIONS * 3, 300)
    tok.save(tmp_path / "tok")
    out = {}
    for name, cls, task in (("pointer", VarMisusePointerSystem, "variable_misuse_repair"),
                            ("classifier", CodeClassifierSystem, "wrong_binary_operator")):
        torch.manual_seed(0)
        system = cls(TokenEncoder(TokenEncoderConfig(**ENCODER)), lr=1e-3)
        run = write_run(tmp_path / name, system,
                        {"class_path": f"tasks.code.{cls.__name__}",
                         "init_args": {"lr": 1e-3, "encoder": {"class_path": "modalities.TokenEncoder",
                                                               "init_args": {"config": ENCODER}}}},
                        {"class_path": "tasks.data.code.CodeTaskDataModule",
                         "init_args": {"task": task, "benchmark": "unused", "tokenizer": str(tmp_path / "tok"),
                                       "max_length": 128}})
        out[name] = (run, run / "checkpoints" / "last.ckpt", system)
    return out


def test_pointer_predictions_name_a_local_and_match_the_model(finetuned):
    run, ckpt, reference = finetuned["pointer"]
    system, tok, task, max_length = load_finetuned(run)
    assert task == "variable_misuse_repair" and max_length == 128
    fns = [{"source": s, "path": "m.py", "name": f"f{i}", "line": 10 * i + 1} for i, s in enumerate(FUNCTIONS)]
    preds = predict(system, tok, task, fns, max_length, batch_size=2)
    assert [p["name"] for p in preds] == ["f0", "f1", "f2", "f3"]  # input order, skipped ones in place
    assert "fewer than two local variables" in preds[1]["skipped"] and "bug_probability" not in preds[1]
    for fn, p in zip(fns, preds, strict=True):
        if "skipped" in p:
            continue
        names = set(local_variables(fn["source"]))
        assert 0.0 <= p["bug_probability"] <= 1.0
        assert p["location"]["name"] in names and (p["repair"] is None or p["repair"] in names)
        assert fn["line"] <= p["location"]["line"] < fn["line"] + fn["source"].count("\n")
        # the same numbers as the reference model on the featurised function, alone
        occ = local_variables(fn["source"])
        ex = {"source": fn["source"], "label": 0, "error_span": None, "target_spans": [],
              "candidate_spans": sorted({(s, e) for v in occ.values() for s, e, _ in v})}
        with torch.no_grad():
            loc, _ = reference.eval()(collate_examples([featurise(ex, task, tok, max_length)], tok.pad_id))
        assert p["bug_probability"] == pytest.approx(1 - float(loc.softmax(-1)[0, 0]), abs=1e-4)
        assert p["location"]["probability"] == pytest.approx(float(loc.softmax(-1)[0, 1:].max()), abs=1e-4)


def test_classifier_predictions_and_the_command(finetuned, tmp_path, capsys):
    run, ckpt, reference = finetuned["classifier"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("\n\n".join(FUNCTIONS))
    (src / "bin.py").write_bytes(b"\x00\x01")
    out = tmp_path / "preds.jsonl"
    assert tessera(["eval", "code-predict", str(src), "--model", str(run), "--out", str(out), "--top", "2",
                    "--quiet"]) == 0
    rows = [json.loads(line) for line in out.open()]
    assert len(rows) == 4 and all("bug_probability" in r for r in rows)  # every function has a binary score
    probs = [r["bug_probability"] for r in rows]
    assert probs == sorted(probs, reverse=True)  # most suspicious first
    system, tok, task, max_length = load_finetuned(ckpt)  # the checkpoint inside the run works as well
    by_name = {r["name"]: r["bug_probability"] for r in rows}
    f = featurise({"source": FUNCTIONS[2], "label": 0}, task, tok, max_length)
    expected = float(reference.eval()(collate_examples([f], tok.pad_id)).softmax(-1)[0, 1])
    assert by_name["merge"] == pytest.approx(expected, abs=1e-4)
    printed = capsys.readouterr().out
    assert "4 functions scored, 0 skipped {}" in printed and "null bytes" in printed


def _rewrite(run, folder, **data):
    """A copy of ``run`` whose config.yaml has other data init_args."""
    import shutil

    shutil.copytree(run, folder)
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    raw["data"]["init_args"].update(data)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    return folder


def test_refusals(finetuned, tmp_path):
    run, ckpt, _ = finetuned["classifier"]
    with pytest.raises(ValueError, match="need a docstring pair or a hole"):
        load_finetuned(_rewrite(run, tmp_path / "exc", task="exception_type"))
    with pytest.raises(ValueError, match="does not fit task"):  # a classifier run with the pointer's task
        load_finetuned(_rewrite(run, tmp_path / "mix", task="variable_misuse_repair"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_finetuned(tmp_path / "missing")


@pytest.mark.parametrize("case", ["missing model", "empty folder", "encoder folder", "corrupt checkpoint",
                                  "missing paths", "unknown option", "a docstring task"])
def test_code_predict_bad_inputs_exit_2_with_one_line(finetuned, tmp_path, capsys, case):
    """Each mistake: exit status 2 and one line on stderr naming the input, no traceback."""
    run, ckpt, _ = finetuned["classifier"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text(FUNCTIONS[0])
    model, paths, extra, named = str(run), [str(src)], [], None
    if case == "missing model":
        model = named = str(tmp_path / "nowhere")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        model = named = str(tmp_path / "empty")
    elif case == "encoder folder":  # an encoder folder is not a fine-tuned run
        from modalities.hub import save_encoder

        model = named = str(save_encoder(TokenEncoder(TokenEncoderConfig(**ENCODER)), tmp_path / "enc"))
    elif case == "corrupt checkpoint":
        ckpt.write_bytes(b"not a checkpoint")
        named = str(ckpt)
    elif case == "missing paths":
        paths = [named := str(tmp_path / "no_such_dir")]
    elif case == "unknown option":
        extra, named = ["--bogus"], "--bogus"
    else:
        model = named = str(_rewrite(run, tmp_path / "exc", task="exception_type"))
    rc = tessera(["eval", "code-predict", *paths, "--model", model, "--out", str(tmp_path / "p.jsonl"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err)
    if case != "unknown option":
        assert len(err) == 1

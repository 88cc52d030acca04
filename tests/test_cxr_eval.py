"""`tessera eval cxr-retrieval | cxr-clip | cxr-towers` (tasks/eval/cxr.py): what they write, and
every bad input one line on stderr with exit status 2."""

import json
import shutil

import pytest
import torch
from cxr_fixtures import dual_tower_folder, text_tower_folder, write_reports

from tasks.cli import main as tessera


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return write_reports(tmp_path_factory.mktemp("openi") / "xml", n=120)


@pytest.fixture(scope="module")
def tower(reports, tmp_path_factory):
    return text_tower_folder(tmp_path_factory.mktemp("tower") / "bert-run" / "encoder", reports)


@pytest.fixture(scope="module")
def dual(reports, tmp_path_factory):
    return dual_tower_folder(tmp_path_factory.mktemp("dual") / "clip-run" / "encoder", reports)


def one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


# --- cxr-retrieval --------------------------------------------------------------------------
def test_retrieval_scores_named_and_unnamed_towers_next_to_tfidf(reports, tower, tmp_path):
    out = tmp_path / "ret"
    assert tessera(["eval", "cxr-retrieval", str(tower), f"again={tower}", "--reports", str(reports),
                    "--split", "train", "--out", str(out)]) == 0
    result = json.loads((out / "retrieval.json").read_text())
    assert list(result["results"]) == ["tfidf", "bert-run", "again"]  # the run's folder name by default
    cell = result["results"]["bert-run"]["abbreviated"]["f2i"]
    assert 0 <= cell["recall@1"] <= cell["recall@10"] <= 1
    assert result["results"]["bert-run"] == result["results"]["again"]  # the same folder twice
    assert (out / "retrieval.png").stat().st_size > 10_000
    assert result["results"]["tfidf"]["original"]["f2i"]["recall@10"] > 0.5  # the templates are lexically distinct


def _corrupt_copy(folder, tmp_path, name="model.safetensors"):
    bad = tmp_path / "corrupt"
    shutil.copytree(folder, bad)
    (bad / name).write_bytes(b"not safetensors at all")
    return bad


def _other_modality(tower, tmp_path):
    other = tmp_path / "code-encoder"
    shutil.copytree(tower, other)
    raw = json.loads((other / "config.json").read_text())
    raw["meta"]["modality"] = "code"
    (other / "config.json").write_text(json.dumps(raw))
    return other


@pytest.mark.parametrize("case", ["missing", "empty", "other-modality", "corrupt-weights", "no-weights",
                                  "no-tokenizer", "missing-reports", "out-is-a-file", "same-name"])
def test_retrieval_bad_input_is_one_line_and_exit_2(case, reports, tower, tmp_path, capsys):
    args, named = [str(tower)], str(tower)
    extra = ["--reports", str(reports), "--split", "train", "--out", str(tmp_path / "out")]
    if case == "missing":
        args = [named := str(tmp_path / "nowhere")]
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args = [named := str(tmp_path / "empty")]
    elif case == "other-modality":
        args = [named := str(_other_modality(tower, tmp_path))]
    elif case == "corrupt-weights":
        args = [str(_corrupt_copy(tower, tmp_path))]
        named = "model.safetensors"
    elif case == "no-weights":
        bad = _corrupt_copy(tower, tmp_path)
        (bad / "model.safetensors").unlink()
        args, named = [str(bad)], "model.safetensors"
    elif case == "no-tokenizer":
        bad = _corrupt_copy(tower, tmp_path, "tokenizer.json")
        (bad / "tokenizer.json").unlink()
        args, named = [str(bad)], "--tokenizer"
    elif case == "missing-reports":
        extra[1] = named = str(tmp_path / "no-reports.tgz")
    elif case == "out-is-a-file":
        (tmp_path / "out").write_text("x")
        named = str(tmp_path / "out")
    elif case == "same-name":
        args, named = [f"a={tower}", f"a={tower}"], "NAME=FOLDER"
    assert tessera(["eval", "cxr-retrieval", *args, *extra]) == 2
    one_error_line(capsys, named)


def test_unknown_options_exit_2_without_a_traceback(capsys):
    for argv in (["eval", "cxr-retrieval", "--bogus"], ["eval", "cxr-clip", "x", "--bogus"],
                 ["eval", "cxr-towers", "--bogus"]):
        assert tessera(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "--bogus" in err.strip().splitlines()[-1]


# --- cxr-clip -------------------------------------------------------------------------------
def test_clip_eval_reads_an_exported_dual_tower_and_says_synthetic(reports, dual, tmp_path):
    out = tmp_path / "clip"
    assert tessera(["eval", "cxr-clip", str(dual), "--reports", str(reports), "--split", "train",
                    "--out", str(out)]) == 0
    r = json.loads((out / "clip_eval.json").read_text())
    assert r["images_are"].startswith("SYNTHETIC") and r["image_size"] == 32
    assert 0 <= r["i2t_same_findings"]["recall@1"] <= r["i2t_same_findings"]["recall@10"] <= 1
    assert set(r["zero_shot_auroc"]) <= {"cardiomegaly", "effusion", "pneumothorax", "nodule", "opacity"}


def test_exported_dual_tower_reloads_to_the_same_features(dual):
    from modalities.cxr import load_dual_tower

    a, b = load_dual_tower(dual), load_dual_tower(dual)
    images = torch.randn(2, 1, 32, 32)
    ids, mask = torch.tensor([[2, 40, 41, 3], [2, 50, 3, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool()
    torch.testing.assert_close(a.encode_image(images), b.encode_image(images))
    torch.testing.assert_close(a.encode_text(ids, mask), b.encode_text(ids, mask))
    assert json.loads((dual / "config.json").read_text())["meta"]["modality"] == "text"


@pytest.mark.parametrize("case", ["missing", "empty", "text-tower-only", "other-modality", "corrupt-dual-weights",
                                  "corrupt-text-weights", "no-text-weights"])
def test_clip_eval_bad_input_is_one_line_and_exit_2(case, reports, tower, dual, tmp_path, capsys):
    if case == "missing":
        path = named = tmp_path / "nowhere"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        path = named = tmp_path / "empty"
    elif case == "text-tower-only":
        path = named = tower
    elif case == "other-modality":
        path = named = _other_modality(tower, tmp_path)
    elif case == "no-text-weights":
        path = _corrupt_copy(dual, tmp_path)
        (path / "model.safetensors").unlink()
        named = "model.safetensors"
    elif case == "corrupt-dual-weights":
        path = _corrupt_copy(dual, tmp_path, "dual_tower/model.safetensors")
        named = "dual_tower/model.safetensors"
    else:
        path, named = _corrupt_copy(dual, tmp_path), "model.safetensors"
    assert tessera(["eval", "cxr-clip", str(path), "--reports", str(reports), "--out", str(tmp_path / "o")]) == 2
    one_error_line(capsys, named)


# --- cxr-towers -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["negative-steps", "out-is-a-file", "missing-reports"])
def test_towers_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    args = ["eval", "cxr-towers", "--out", str(tmp_path / "out")]
    if case == "negative-steps":
        args += ["--mntp-steps", "-1"]
        named = "--mntp-steps"
    elif case == "out-is-a-file":
        (tmp_path / "out").write_text("x")
        named = tmp_path / "out"
    else:
        args += ["--reports", str(tmp_path / "none.tgz")]
        named = tmp_path / "none.tgz"
    assert tessera(args) == 2
    one_error_line(capsys, named)


@pytest.mark.slow
def test_towers_sweep_trains_every_row_and_counts_head_to_head(reports, tmp_path):
    out = tmp_path / "compare"
    fit = ["--fit-arg=--data.init_args.vocab_size=200", "--fit-arg=--data.init_args.batch_size=8",
           "--fit-arg=--trainer.limit_val_batches=1", "--fit-arg=--trainer.enable_progress_bar=false",
           "--fit-arg=--data.init_args.cache_dir=" + str(tmp_path / "cache")]
    assert tessera(["eval", "cxr-towers", "--clm-steps", "1", "--mntp-steps", "1", "--simcse-steps", "1",
                    "--supervised-steps", "2", "--minilm", "none", "--no-scratch", "--reports", str(reports),
                    "--out", str(out), *fit]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert set(result["mean"]) == {"tfidf", "llm2vec", "llm2vec-simcse", "bert", "bert-simcse",
                                   "llm2vec-no-simcse", "bert-no-simcse"}
    assert result["runs"]["0"]["llm2vec-no-simcse"]["starts_from"].endswith("llm2vec-mntp/lightning_logs/version_0/encoder")
    assert result["head_to_head"]["llm2vec vs bert"]["all"]["f2i"]["recall@1"]["cases"] == 4
    assert (out / "retrieval.png").is_file()

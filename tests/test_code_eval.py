"""`tessera eval code`: the fine-tuning sweep (lr and round chosen on validation), merge and pool-seeds,
the kept weights reloading through tasks.runs.load_system, and bad inputs."""

import json
from pathlib import Path

import lightning as L
import pytest
from code_fixtures import TINY

from modalities.code import BiLSTMEncoder
from tasks.cli import main as tessera
from tasks.data.code import CodeTaskDataModule
from tasks.eval import code as code_eval


@pytest.mark.slow
def test_code_eval_selects_lr_on_validation(benchmark_dir, tmp_path):
    """tessera eval code: with several learning rates each model keeps the one with the best
    validation score, and its test figures are that run's (not the best test figure)."""
    evaluate, merge = code_eval.evaluate, code_eval.merge

    bench, tokdir = benchmark_dir
    cfg = dict(TINY)
    res = evaluate(["variable_misuse", "variable_misuse_repair"], bench, tokdir, None, cfg, tmp_path / "eval",
                   steps=3, batch_size=8, max_length=128, max_examples=48, lr=[1e-3, 1e-6], models=("scratch",))
    for task, key in (("variable_misuse", "accuracy"), ("variable_misuse_repair", "joint")):
        row = res["tasks"][task]["scratch"]
        assert [r["lr"] for r in row["sweep"]] == [1e-3, 1e-6]
        best = max(row["sweep"], key=lambda r: r[f"val/{key}"])
        assert row["lr"] == best["lr"] and row["selected_by"] == f"val/{key}"
        assert row[f"test/{key}"] == best[f"test/{key}"]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["settings"]["lr"] == [1e-3, 1e-6]
    assert (tmp_path / "eval" / "results.png").stat().st_size > 0
    # a second run of another model joins the first into one table; other settings refuse to
    lstm = evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "lstm", steps=3, batch_size=8,
                    max_length=128, max_examples=48, lr=1e-3, models=("bilstm",))
    joined = merge([tmp_path / "eval" / "results.json", tmp_path / "lstm" / "results.json"])
    assert joined["tasks"]["variable_misuse"]["bilstm"] == lstm["tasks"]["variable_misuse"]["bilstm"]
    assert joined["tasks"]["variable_misuse"]["scratch"] == res["tasks"]["variable_misuse"]["scratch"]
    # --val-every: the weights of the best validation round (the last step's included) are tested
    sel = evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "sel", steps=5, batch_size=8,
                   max_length=128, max_examples=48, lr=1e-3, models=("scratch",), val_every=2)
    (run,) = sel["tasks"]["variable_misuse"]["scratch"]["sweep"]
    curve = run["val_curve"]
    assert [s for s, _ in curve] == [2, 4, 5]
    assert run["best_step"] == max(curve, key=lambda c: c[1])[0] and run["val/accuracy"] == max(v for _, v in curve)
    assert sel["tasks"]["variable_misuse"]["scratch"]["best_step"] == run["best_step"]
    with pytest.raises(ValueError, match="val_every"):
        merge([tmp_path / "eval" / "results.json", tmp_path / "sel" / "results.json"])
    # a second learning rate of the same model, run apart, joins its sweep and is chosen on validation
    sel2 = evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "sel2", steps=5, batch_size=8,
                    max_length=128, max_examples=48, lr=1e-6, models=("scratch",), val_every=2)
    pooled = merge([tmp_path / "sel" / "results.json", tmp_path / "sel2" / "results.json"])["tasks"]["variable_misuse"]["scratch"]
    runs = sel["tasks"]["variable_misuse"]["scratch"]["sweep"] + sel2["tasks"]["variable_misuse"]["scratch"]["sweep"]
    assert [r["lr"] for r in pooled["sweep"]] == [1e-3, 1e-6]
    best = max(runs, key=lambda r: r["val/accuracy"])
    assert pooled["lr"] == best["lr"] and pooled["test/accuracy"] == best["test/accuracy"]
    with pytest.raises(ValueError, match="twice"):
        merge([tmp_path / "sel" / "results.json", tmp_path / "sel" / "results.json"])
    evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "other", steps=4, batch_size=8,
             max_length=128, max_examples=48, lr=1e-3, models=("bilstm",))
    with pytest.raises(ValueError, match="other settings"):
        merge([tmp_path / "eval" / "results.json", tmp_path / "other" / "results.json"])


def test_code_eval_select_by_classification_judges_the_pointer_as_a_detector(benchmark_dir, tmp_path):
    """--select-by classification: the pointer model's round and learning rate are chosen on
    validation classification accuracy (not joint), the table reports test classification, and a
    metric the task does not log is refused before any training."""
    mod = code_eval
    bench, tokdir = benchmark_dir
    cfg = dict(TINY)
    res = mod.evaluate(["variable_misuse_repair"], bench, tokdir, None, cfg, tmp_path / "cls", steps=5, batch_size=8,
                       max_length=128, max_examples=48, lr=[1e-3, 1e-6], models=("scratch",), val_every=2,
                       select_by="classification")
    row = res["tasks"]["variable_misuse_repair"]
    entry = row["scratch"]
    assert entry["selected_by"] == "val/classification" and res["settings"]["select_by"] == "classification"
    for run in entry["sweep"]:
        assert run["val/classification"] == max(v for _, v in run["val_curve"])  # the curve is of classification
    best = max(entry["sweep"], key=lambda r: r["val/classification"])
    assert entry["lr"] == best["lr"] and entry["test/classification"] == best["test/classification"]
    key, values = mod.headline(row)
    assert key == "test/classification" and values["scratch"] == best["test/classification"]
    assert "majority_class" in values  # a detector is compared with always answering the majority label
    assert mod.headline({"scratch": {**entry, "selected_by": "val/joint"}})[0] == "test/joint"
    for task, metric in (("variable_misuse", "classification"), ("variable_misuse_repair", "accuracy")):
        with pytest.raises(ValueError, match=f"not a validation metric of {task}"):
            mod.evaluate([task], bench, tokdir, None, cfg, tmp_path / "bad", steps=1, select_by=metric)
    joint = mod.evaluate(["variable_misuse_repair"], bench, tokdir, None, cfg, tmp_path / "joint", steps=5,
                         batch_size=8, max_length=128, max_examples=48, lr=1e-4, models=("scratch",), val_every=2)
    with pytest.raises(ValueError, match="select_by"):  # runs chosen on different metrics never share a table
        mod.merge([tmp_path / "cls" / "results.json", tmp_path / "joint" / "results.json"])
    assert joint["tasks"]["variable_misuse_repair"]["scratch"]["selected_by"] == "val/joint"


def _fake_results(path, pretrained, rows):
    """A results.json as code_eval writes it: ``rows`` maps model -> [(lr, val accuracy, test accuracy)]."""
    select = code_eval.select
    task = {m: select([{"lr": lr, "val/accuracy": v, "test/accuracy": t, "fit_seconds": 1.0} for lr, v, t in runs], 10)
            for m, runs in rows.items()}
    settings = {"steps": 10, "batch_size": 4, "max_length": 64, "max_examples": 8, "seed": 0,
                "precision": "32-true", "pooling": "cls", "val_every": 5, "pretrained": pretrained}
    path.write_text(json.dumps({"settings": settings, "tasks": {"exception_type": task}}))
    return path


def test_code_eval_merge_takes_chosen_models_and_refuses_mixed_checkpoints(tmp_path):
    """--merge PATH:scratch,bilstm takes only those models from PATH; pretrained rows of two different
    checkpoints never share a table (they would be pooled as if one model)."""
    old = _fake_results(tmp_path / "old.json", "ckpt-2000", {"pretrained": [(3e-4, 0.9, 0.9)],
                                                             "scratch": [(3e-4, 0.4, 0.35)], "bilstm": [(1e-3, 0.5, 0.45)]})
    new = _fake_results(tmp_path / "new.json", "ckpt-4000", {"pretrained": [(3e-4, 0.6, 0.55), (1e-3, 0.7, 0.5)]})
    merge = code_eval.merge
    with pytest.raises(ValueError, match="different checkpoints"):
        merge([new, old])
    row = merge([new, f"{old}:scratch,bilstm"])
    table = row["tasks"]["exception_type"]
    assert table["pretrained"]["test/accuracy"] == 0.5 and table["pretrained"]["lr"] == 1e-3  # the new run's best val
    assert table["scratch"]["test/accuracy"] == 0.35 and table["bilstm"]["test/accuracy"] == 0.45
    assert row["settings"]["init_from"] == "ckpt-4000"
    assert row["settings"]["merged_from"][1].endswith(":scratch,bilstm")
    assert "bilstm" not in merge([new, f"{old}:scratch"])["tasks"]["exception_type"]


def test_code_eval_pool_seeds(tmp_path):
    """--pool-seeds: each seed's validation-chosen test figure, their mean and std; files that differ
    in more than the seed, or repeat a seed, are refused."""
    a = _fake_results(tmp_path / "s0.json", "ckpt", {"pretrained": [(3e-4, 0.5, 0.40), (1e-3, 0.6, 0.30)],
                                                      "bilstm": [(1e-3, 0.5, 0.35)]})
    b = _fake_results(tmp_path / "s1.json", "ckpt", {"pretrained": [(3e-4, 0.7, 0.50), (1e-3, 0.6, 0.45)],
                                                      "bilstm": [(1e-3, 0.5, 0.45)]})
    for path, seed in ((a, 0), (b, 1)):
        r = json.loads(path.read_text())
        r["settings"]["seed"] = seed
        path.write_text(json.dumps(r))
    pool_seeds = code_eval.pool_seeds
    pooled = pool_seeds([a, b])["tasks"]["exception_type"]
    assert pooled["pretrained"]["per_seed"] == [0.30, 0.50] and pooled["pretrained"]["lr"] == [1e-3, 3e-4]
    assert pooled["pretrained"]["test/accuracy"] == pytest.approx(0.40)
    assert pooled["pretrained"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert pooled["bilstm"]["test/accuracy"] == pytest.approx(0.40)
    with pytest.raises(ValueError, match="twice"):
        pool_seeds([a, a])
    c = _fake_results(tmp_path / "s2.json", "other-ckpt", {"pretrained": [(3e-4, 0.5, 0.4)], "bilstm": [(1e-3, 0.5, 0.4)]})
    with pytest.raises(ValueError, match="more than the seed"):
        pool_seeds([a, c])
    assert tessera(["eval", "code", "--pool-seeds", str(a), str(b), "--out", str(tmp_path / "pooled")]) == 0
    assert json.loads((tmp_path / "pooled" / "results.json").read_text())["settings"]["seed"] == [0, 1]
    assert (tmp_path / "pooled" / "results.png").stat().st_size > 0


def test_code_eval_keeps_the_tested_weights_for_code_predict(benchmark_dir, tmp_path):
    """save_models: each run's folder holds the weights it was tested with and a YAML that rebuilds the
    system; tasks.code_predict.load_finetuned reads both, and testing the rebuilt system gives the
    reported test accuracy again (the validation-chosen round's weights, not the last step's)."""
    from tasks.code_predict import load_finetuned, predict

    mod = code_eval
    bench, tokdir = benchmark_dir
    cfg = dict(TINY)
    res = mod.evaluate(["variable_misuse"], bench, tokdir, None, cfg, tmp_path / "ev", steps=5, batch_size=8,
                       max_length=128, max_examples=48, lr=1e-3, models=("scratch", "bilstm"), val_every=2,
                       save_models=True)
    for model in ("scratch", "bilstm"):
        (run,) = res["tasks"]["variable_misuse"][model]["sweep"]
        folder = Path(run["saved"])
        assert folder == tmp_path / "ev" / "variable_misuse" / model / "lr0.001"
        system, tok, task, max_length = load_finetuned(folder)  # tasks.runs.load_system underneath
        assert task == "variable_misuse" and max_length == 128
        assert isinstance(system.encoder, BiLSTMEncoder) == (model == "bilstm")
        dm = CodeTaskDataModule("variable_misuse", str(bench), str(tokdir), max_length=128, batch_size=8, max_examples=48)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)
        (test,) = trainer.test(system, dm, verbose=False)
        assert round(test["test/accuracy"], 4) == run["test/accuracy"]
        fn = json.loads((bench / "variable_misuse" / "test.jsonl").open().readline())
        (pred,) = predict(system, tok, task, [{"source": fn["source"], "name": fn["function"]}], max_length)
        assert 0.0 <= pred["bug_probability"] <= 1.0


def test_eval_code_starts_from_an_encoder_folder_and_takes_its_tokenizer(benchmark_dir, tmp_path):
    """--init-from an encoder folder: its config shapes the Transformers, its tokenizer reads the
    benchmark, and the pretrained row is fine-tuned from its weights."""
    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.code import load_code_tokenizer, save_code_encoder

    bench, tokdir = benchmark_dir
    folder = save_code_encoder(TokenEncoder(TokenEncoderConfig(**TINY)), load_code_tokenizer(tokdir), tmp_path / "enc")
    assert tessera(["eval", "code", "--benchmark", str(bench), "--init-from", str(folder), "--models", "pretrained",
                    "--steps", "2", "--batch-size", "8", "--max-length", "128", "--max-examples", "32",
                    "--out", str(tmp_path / "ev"), "--quiet", "--no-save-models"]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["settings"]["init_from"] == str(folder)
    assert 0 <= res["tasks"]["variable_misuse"]["pretrained"]["test/accuracy"] <= 1


@pytest.mark.parametrize("case", ["missing benchmark", "empty benchmark", "missing init_from", "another modality",
                                  "corrupt weights", "missing weights", "missing results", "unknown option"])
def test_eval_code_bad_inputs_exit_2_with_one_line(benchmark_dir, tmp_path, capsys, case):
    """Each mistake: exit status 2 and one line on stderr naming the input, no traceback."""
    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.code import load_code_tokenizer, save_code_encoder

    bench, tokdir = benchmark_dir
    folder = save_code_encoder(TokenEncoder(TokenEncoderConfig(**TINY)), load_code_tokenizer(tokdir), tmp_path / "enc")
    args = ["--benchmark", str(bench), "--init-from", str(folder)]
    if case == "missing benchmark":
        args[1] = named = str(tmp_path / "nowhere")
    elif case == "empty benchmark":
        (tmp_path / "empty").mkdir()
        args[1], named = str(tmp_path / "empty"), "variable_misuse/train.jsonl"
    elif case == "missing init_from":
        args[3] = named = str(tmp_path / "no_encoder")
    elif case == "another modality":  # a text encoder folder: no code tokenizer
        from modalities.hub import save_encoder

        args[3] = named = str(save_encoder(TokenEncoder(TokenEncoderConfig(**TINY)), tmp_path / "text",
                                           meta={"modality": "text"}))
    elif case == "corrupt weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 16)
        named = "model.safetensors"
    elif case == "missing weights":
        (folder / "model.safetensors").unlink()
        named = str(folder)
    elif case == "missing results":
        args, named = ["--merge", str(tmp_path / "none.json")], str(tmp_path / "none.json")
    else:
        args, named = [*args, "--bogus"], "--bogus"
    rc = tessera(["eval", "code", *args, "--steps", "1", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and named in err[-1] and "Traceback" not in "\n".join(err), err
    if case != "unknown option":
        assert len(err) == 1


def test_code_eval_fine_tunes_from_the_runs_final_encoder_not_a_stale_last_ckpt(benchmark_dir, tmp_path):
    """A masked-LM run whose step count is not a multiple of its checkpoint interval keeps an older
    last.ckpt than the encoder/ folder fit writes at its end; --init-from the run folder must start
    the pretrained row from the final weights (encoder/), not from last.ckpt's."""
    import torch
    from code_fixtures import write_run
    from safetensors.torch import load_file

    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.code import load_code_tokenizer, save_code_encoder
    from tasks.text import MaskedLMSystem

    bench, tokdir = benchmark_dir
    torch.manual_seed(0)
    stale = MaskedLMSystem(TokenEncoder(TokenEncoderConfig(**TINY)))  # what last.ckpt holds (an early step)
    run = write_run(tmp_path / "mlm", stale, {"class_path": "tasks.text.MaskedLMSystem", "init_args": {
        "encoder": {"class_path": "modalities.TokenEncoder", "init_args": {"config": TINY}}}})
    torch.manual_seed(1)
    final = TokenEncoder(TokenEncoderConfig(**TINY))  # what the end of fit exported
    save_code_encoder(final, load_code_tokenizer(tokdir), run / "encoder")
    res = code_eval.evaluate(["variable_misuse"], bench, tokdir, str(run), dict(TINY), tmp_path / "ev", steps=1,
                             batch_size=8, max_length=128, max_examples=16, lr=0.0, models=("pretrained",),
                             save_models=True)  # lr 0: the tested weights are the starting weights
    saved = load_file(res["tasks"]["variable_misuse"]["pretrained"]["sweep"][0]["saved"] + "/model.safetensors")
    emb = "encoder.frontend.word_embeddings.weight"
    assert torch.equal(saved[emb], final.state_dict()[emb[len("encoder."):]])
    assert not torch.equal(saved[emb], stale.encoder.state_dict()[emb[len("encoder."):]])
    assert res["settings"]["weights"] == str(run / "encoder")

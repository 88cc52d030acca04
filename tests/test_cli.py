"""The tessera CLI: every YAML parses, MLM pretraining learns, a crashed run resumes exactly, DDP."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tasks.cli import TesseraCLI
from tasks.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
TINY = ROOT / "configs" / "text" / "tiny.yaml"


def data_args(corpus, tmp_path):
    return ["--data.init_args.corpus", str(corpus), "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--data.init_args.vocab_size", "300", "--data.init_args.max_length", "32",
            "--data.init_args.batch_size", "8", "--data.init_args.val_fraction", "0.2"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_and_instantiates(path, tmp_path):
    configs, raw = ["--config", str(path)], yaml.safe_load(path.read_text())
    if "model" not in raw:  # a trainer preset: given first, then a model's YAML
        configs = configs + ["--config", str(TINY)]
        if raw["trainer"].get("accelerator") == "gpu" and not torch.cuda.is_available():
            configs += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]  # parse it here
    cli = TesseraCLI(args=[*configs, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"],
                     run=False)
    assert isinstance(cli.model, torch.nn.Module) and cli.datamodule is not None


def fit(tmp_path, corpus, *extra):
    return cli_main(["fit", "--config", str(TINY), *data_args(corpus, tmp_path),
                     "--trainer.enable_progress_bar", "false", *extra])


@pytest.mark.slow
def test_fit_learns_and_writes_metrics(text_corpus, tmp_path):
    root = tmp_path / "run"
    fit(tmp_path, text_corpus, "--trainer.default_root_dir", str(root), "--trainer.max_steps", "60",
        "--trainer.val_check_interval", "30")
    log = root / "lightning_logs" / "version_0"
    import json

    metrics = json.loads((log / "metrics.json").read_text())
    val = metrics["history"]["val"]
    assert [r["step"] for r in val] == [30, 60]
    first_train = metrics["history"]["train"][0]["train/loss"]
    assert val[-1]["val/loss"] < first_train - 1.0  # learned something real from the corpus
    assert (log / "loss_curve.png").stat().st_size > 10_000
    data = metrics["data"]  # what the data module read and skipped
    assert data["train_documents"] + data["val_documents"] + data["skipped_too_short"] == 400  # the corpus's
    # last.ckpt although the YAML lists no checkpoint callback (the run contract keeps it)
    assert "callbacks" not in yaml.safe_load(TINY.read_text())["trainer"]
    assert (log / "config.yaml").is_file() and (log / "checkpoints" / "last.ckpt").is_file()
    # the run folder rebuilds the system, encoder included, from its config.yaml (nothing unpickled)
    from tasks.runs import load_system
    from tasks.text import MaskedLMSystem

    system, _, _ = load_system(log / "checkpoints" / "last.ckpt")
    assert isinstance(system, MaskedLMSystem) and system.encoder.config.hidden_size == 128
    assert system.encoder.config.vocab_size == 300  # written once, on the data module (data_args)


def _crash_config(tmp_path) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"every_n_train_steps": 3, "save_last": True, "save_top_k": -1}},
    ]
    enc = cfg["model"]["init_args"]["encoder"]["init_args"]["config"]
    enc["hidden_dropout"] = enc["attention_dropout"] = 0.0  # masks and order are seeded; dropout is not
    cfg["trainer"]["val_check_interval"] = 100
    cfg["trainer"]["num_sanity_val_steps"] = 0
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_crashed_run_resumes_where_it_stopped(text_corpus, tmp_path):
    cfg = _crash_config(tmp_path)
    common = ["fit", "--config", str(cfg), *data_args(text_corpus, tmp_path), "--trainer.enable_progress_bar",
              "false", "--trainer.max_steps", "12", "--trainer.logger", "false"]
    # epoch = 320 training documents / 8 = 40 batches: every checkpoint here is mid-epoch
    with pytest.raises(RuntimeError, match="simulated crash at step 8"):
        cli_main([*common, "--trainer.default_root_dir", str(tmp_path / "a"),
                  "--trainer.callbacks+", "conftest.CrashAt", "--trainer.callbacks.step", "8"])
    ckpts = tmp_path / "a" / "checkpoints"
    last = ckpts / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 6
    cli_main([*common, "--trainer.default_root_dir", str(tmp_path / "a"), "--ckpt_path", str(last)])
    cli_main([*common, "--trainer.default_root_dir", str(tmp_path / "b")])
    resumed, straight = _weights(last), _weights(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 12
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(text_corpus, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(TINY), "--config",
           str(ROOT / "configs" / "trainer" / "ddp_cpu.yaml"), *data_args(text_corpus, tmp_path),
           "--trainer.default_root_dir", str(tmp_path / "ddp"), "--trainer.max_steps", "4",
           "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false"]
    # prepare_data runs on rank 0 only: fill the cache first so the test is about DDP, not races
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    ckpt = tmp_path / "ddp" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 4


def test_the_vocabulary_is_written_once_on_the_data_module(tmp_path):
    common = ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--data.init_args.vocab_size", "300"]
    cli = TesseraCLI(args=["--config", str(TINY), *common], run=False)
    assert cli.model.encoder.frontend.word_embeddings.num_embeddings == 300
    llm2vec = ROOT / "configs" / "cxr" / "llm2vec_simcse_tiny.yaml"  # an HF decoder config nested in the tower
    cli = TesseraCLI(args=["--config", str(llm2vec), *common], run=False)
    assert [m.num_embeddings for m in cli.model.modules() if isinstance(m, torch.nn.Embedding)] == [300]


def test_a_vocabulary_written_twice_and_different_is_refused(tmp_path, capsys):
    rc = cli_main(["fit", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path),
                   "--model.init_args.encoder.init_args.config.vocab_size", "500", "--data.init_args.vocab_size", "300"])
    err = capsys.readouterr().err
    assert rc == 2 and "vocab_size is 500" in err and "data.init_args.vocab_size is 300" in err
    assert "Traceback" not in err



def test_lightnings_tips_and_logger_notice_do_not_reach_the_console(caplog):
    import logging

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from tasks.cli import quiet_lightning

    quiet_lightning()
    quiet_lightning()  # idempotent: one filter
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=log.name):
            rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
            rank_zero_info("Restoring states from the checkpoint path at last.ckpt")
    finally:
        log.removeHandler(caplog.handler)
    # (the record may arrive twice: through this handler and through propagation to caplog's own)
    assert {r.getMessage() for r in caplog.records} == {"Restoring states from the checkpoint path at last.ckpt"}
    assert sum(type(f).__name__ == "_DropNoise" for f in log.filters) == 1

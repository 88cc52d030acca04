"""Integrity: encoder folders and checkpoints carry a checksum of their tensors that load verifies;
non-finite weights are refused by name; training stops on a non-finite loss and never exits 0."""

from pathlib import Path

import pytest
import torch

import modalities
from tasks.callbacks import NonFiniteLossError, StopOnNonFinite
from tasks.cli import main as tessera
from tasks.runs import read_state_dict

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "text" / "tiny.yaml"


def flip_a_byte_in_the_tensor_data(path: Path, at: int = -200) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_an_encoder_folder_is_refused(tmp_path):
    modalities.save_encoder(modalities.create_encoder("bert-tiny"), tmp_path)
    modalities.load_encoder(tmp_path)  # intact: loads
    flip_a_byte_in_the_tensor_data(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the checksum"):
        modalities.load_encoder(tmp_path)


def test_non_finite_weights_are_refused_with_the_tensors_name(tmp_path):
    enc = modalities.create_encoder("bert-tiny")
    with torch.no_grad():
        enc.backbone.layers[1].mlp.fc1.weight[0, 0] = float("nan")
    modalities.save_encoder(enc, tmp_path)
    with pytest.raises(ValueError, match=r"'backbone\.layers\.1\.mlp\.fc1\.weight' holds 1 non-finite"):
        modalities.load_encoder(tmp_path)


def test_an_interrupted_save_leaves_no_config_promising_weights(tmp_path, monkeypatch):
    import modalities.hub as hub

    def dies(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hub, "save_file", dies)
    with pytest.raises(OSError):
        modalities.save_encoder(modalities.create_encoder("bert-tiny"), tmp_path)
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "model.safetensors").exists()


def test_the_non_finite_loss_guard_counts_steps_in_a_row():
    class Trainer:
        global_step = 7

    guard = StopOnNonFinite(patience=1)
    nan = {"loss": torch.tensor(float("nan"))}
    guard.on_train_batch_end(Trainer(), None, nan, None, 0)  # one bad step is allowed
    guard.on_train_batch_end(Trainer(), None, {"loss": torch.tensor(1.0)}, None, 1)  # a good one resets
    guard.on_train_batch_end(Trainer(), None, nan, None, 2)
    with pytest.raises(NonFiniteLossError, match="at step 7"):
        guard.on_train_batch_end(Trainer(), None, {"loss": torch.tensor(float("inf"))}, None, 3)


def _fit(corpus, tmp, root, *extra):
    return tessera(["fit", "--config", str(TINY), "--data.init_args.corpus", str(corpus),
                    "--data.init_args.cache_dir", str(tmp / "cache"), "--data.init_args.vocab_size", "300",
                    "--data.init_args.max_length", "32", "--data.init_args.batch_size", "8",
                    "--data.init_args.val_fraction", "0.2", "--trainer.val_check_interval", "2",
                    "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root), *extra])


@pytest.mark.slow
def test_a_diverging_run_stops_with_status_1(text_corpus, tmp_path, capsys):
    rc = _fit(text_corpus, tmp_path, tmp_path / "run", "--trainer.max_steps", "40", "--model.init_args.lr", "1e12",
              "--model.init_args.warmup", "0")
    assert rc == 1
    assert "stopping" in capsys.readouterr().err


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_refused_before_training(text_corpus, tmp_path, capsys):
    root = tmp_path / "run"
    assert _fit(text_corpus, tmp_path, root, "--trainer.max_steps", "2") == 0
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert "tessera_checksum" in state
    read_state_dict(ckpt)  # intact
    name = next(k for k in state["state_dict"] if k.endswith("mlp.fc1.weight"))
    state["state_dict"][name][0, 0] += 382.0  # what a flipped exponent bit does to one weight
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match="does not match the checksum"):
        read_state_dict(ckpt)
    assert _fit(text_corpus, tmp_path, root, "--trainer.max_steps", "4", "--ckpt_path", str(ckpt)) == 2
    err = capsys.readouterr().err
    assert "last.ckpt does not match the checksum" in err and "Traceback" not in err
    ckpt.write_bytes(b"")
    assert _fit(text_corpus, tmp_path, root, "--trainer.max_steps", "4", "--ckpt_path", str(ckpt)) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


class Payload:
    """Unpickling this would create a file: the proof that a checkpoint ran code."""

    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PAYLOAD_RAN_CKPT",))


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_a_malicious_checkpoint_never_runs_in_any_lightning_command(text_corpus, tmp_path, capsys, command):
    import pickle

    flag = Path(__file__).parent / "PAYLOAD_RAN_CKPT"
    flag.unlink(missing_ok=True)
    ckpt = tmp_path / "evil.ckpt"
    with open(ckpt, "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": Payload()}, f)
    argv = ["--config", str(TINY), "--data.init_args.corpus", str(text_corpus), "--data.init_args.cache_dir",
            str(tmp_path / "cache"), "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(ckpt)]
    assert tessera([command, *argv]) == 2
    assert not flag.exists(), "the checkpoint's payload ran"
    err = capsys.readouterr().err
    assert "evil.ckpt is not a readable checkpoint" in err and "never unpickled" in err and "Traceback" not in err

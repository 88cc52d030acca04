"""FSDP: the encoder folder written at the end of `tessera fit` holds the full weights, not one rank's shard.

What runs on CPU processes (gloo): torch's FSDP1 (``FullyShardedDataParallel``, Lightning's
``strategy: fsdp``) refuses CPU devices ("FSDP needs a non-CPU accelerator device"), and Lightning
2.6 allows ``fsdp`` only with CUDA; FSDP2 (``fully_shard``) runs on CPU, through Lightning's
``ModelParallelStrategy``, which asks the system to shard itself in ``configure_model``. So this
test shards the tiny MLM system with FSDP2 on 2 CPU processes; the FSDP1 path of the same export
(``summon_full_params``) is checked by a gpu-marked test in tests/test_gpu.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks.text import MaskedLMSystem

ROOT = Path(__file__).resolve().parents[1]


class ShardedMaskedLM(MaskedLMSystem):
    """The MLM system with every backbone layer and the rest sharded by FSDP2 over the data-parallel ranks."""

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.encoder.backbone.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)


def _config(tmp_path: Path, corpus: Path, **trainer) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "text" / "tiny.yaml").read_text())
    cfg["trainer"].update(
        accelerator="cpu", devices=2, precision="32-true",
        strategy={"class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
                  "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1,
                                "save_distributed_checkpoint": False}},
        use_distributed_sampler=False, max_steps=2, limit_val_batches=0, enable_progress_bar=False,
        default_root_dir=str(tmp_path / "run"), logger=True,
        callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"every_n_train_steps": 2, "save_last": True}}],
    )
    cfg["model"]["class_path"] = "test_fsdp.ShardedMaskedLM"
    if trainer:  # Lightning's own FSDP (FSDP1) wraps the plain system
        cfg["trainer"].update(trainer)
        cfg["model"]["class_path"] = "tasks.text.MaskedLMSystem"
    cfg["model"]["init_args"]["encoder"]["init_args"]["config"].update(
        vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    cfg["data"]["init_args"].update(corpus=str(corpus), cache_dir=str(tmp_path / "cache"), vocab_size=300,
                                    max_length=32, batch_size=4, val_fraction=0.2)
    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit_and_check_export(config: Path, tmp_path: Path, devices: int = 2):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    cmd = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"MEMBER: {devices}/{devices}" in proc.stderr + proc.stdout
    log = tmp_path / "run" / "lightning_logs" / "version_0"
    exported = load_file(log / "encoder" / "model.safetensors")
    # the reference: Lightning gathers the full state dict into the checkpoint (save_distributed_checkpoint=False)
    ckpt = torch.load(log / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    full = {k.removeprefix("encoder."): v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    assert sorted(exported) == sorted(full)
    for name, tensor in full.items():
        assert exported[name].shape == tensor.shape, f"{name}: exported {tuple(exported[name].shape)}, full {tuple(tensor.shape)}"
        assert torch.equal(exported[name], tensor), name
    assert any(t.shape == (300, 32) for t in exported.values())  # the word embeddings, whole
    import modalities

    assert modalities.load_encoder(log / "encoder").config.hidden_size == 32  # loads strictly


@pytest.mark.slow
def test_fit_under_fsdp2_on_two_cpu_processes_exports_the_full_unsharded_encoder(text_corpus, tmp_path):
    _fit_and_check_export(_config(tmp_path, text_corpus), tmp_path)


@pytest.mark.gpu
def test_fit_under_lightning_fsdp_on_cuda_exports_the_full_unsharded_encoder(text_corpus, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    devices = min(2, torch.cuda.device_count())
    config = _config(tmp_path, text_corpus, accelerator="gpu", devices=devices, strategy="fsdp")
    _fit_and_check_export(config, tmp_path, devices)

"""CUDA checks, skipped without a GPU (scripts/gpu_check.sh runs them where one is): every attention
backend agrees with eager in bf16 on CUDA, the flash varlen path included; a fit step per modality's
tiny config on the GPU; DDP with NCCL when there are two GPUs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modalities.backbone import ATTENTION, create_encoder

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("position", ["absolute", "alibi", "rope"])
@pytest.mark.parametrize("backend", [b for b in ATTENTION.names() if b != "eager"])
def test_backends_agree_with_eager_on_cuda_in_bf16(backend, position):
    torch.manual_seed(0)
    model = create_encoder("bert-tiny", position=position, max_position_embeddings=256,
                           hidden_dropout=0.0, attention_dropout=0.0).cuda().eval()
    lengths = torch.randint(16, 257, (16,)).tolist()
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).cuda()
    ids = torch.randint(5, 100, mask.shape, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        model.set_attention_backend(backend)
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    assert (out - ref)[mask].abs().max() < 5e-2  # bf16 rounding over 2 layers


TINY = sorted(p for p in (ROOT / "configs").rglob("*tiny*.yaml"))


@pytest.mark.parametrize("config", TINY, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_a_fit_step_of_every_tiny_config_on_the_gpu(config, tmp_path):
    cmd = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(config), "--trainer.fast_dev_run", "true",
           "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "bf16-mixed",
           "--trainer.default_root_dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_with_nccl_on_two_gpus(tmp_path):
    cmd = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(ROOT / "configs" / "text" / "tiny.yaml"),
           "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_steps", "4", "--trainer.default_root_dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "NCCL_DEBUG": "WARN"})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("causal, window", [(False, 0), (True, 0), (False, 64)])
def test_flex_attention_takes_alibi_and_bands_on_cuda_with_gradients(causal, window, monkeypatch):
    import modalities.backbone.attention as attention

    calls = []
    flex = attention.flex_unpadded
    monkeypatch.setattr(attention, "flex_unpadded", lambda *a, **k: calls.append(1) or flex(*a, **k))
    torch.manual_seed(0)
    model = create_encoder("bert-tiny", position="alibi", causal=causal, local_attention=window,
                           global_attn_every_n_layers=2, hidden_dropout=0.0, attention_dropout=0.0).cuda().train()
    lengths = torch.randint(16, 257, (16,)).tolist()
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).cuda()
    ids = torch.randint(5, 100, mask.shape, device="cuda")
    proj = torch.randn(model.config.hidden_size, device="cuda")
    grads = {}
    for backend in ("eager", "unpadded"):
        model.set_attention_backend(backend)
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        (out * mask[..., None] * proj).sum().backward()  # a random direction: LayerNorm'd powers are constant
        grads[backend] = (out.detach(), model.backbone.layers[0].attn.qkv.weight.grad.clone())
    assert calls, "the unpadded backend did not take the FlexAttention path"
    assert (grads["unpadded"][0] - grads["eager"][0])[mask].abs().max() < 5e-2
    g, g_ref = grads["unpadded"][1], grads["eager"][1]
    assert (g - g_ref).norm() / g_ref.norm() < 2e-2

"""Linear layers that run fp32 CPU matmuls through oneDNN when it is faster.

On this project's AMD EPYC CPUs, MKL's fp32 GEMM (what ``F.linear`` calls) takes an AVX2
path and reaches about half of what oneDNN's AVX-512 fp32 kernel does on the same shapes,
with fp32 accuracy (see scripts/bench_backbone.py). ``Linear`` keeps ``nn.Linear``'s
parameters and state-dict names; only the kernel differs, and only for fp32 CPU tensors
outside autocast (bf16 autocast already goes to oneDNN; CUDA is untouched).

The kernel is probed once at import; ``TESSERA_ONEDNN_LINEAR=0`` or ``use_onednn(False)``
turns it off.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _probe():
    if os.environ.get("TESSERA_ONEDNN_LINEAR", "1") == "0":
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w, b = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
        if torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-5):
            return op
    except (AttributeError, RuntimeError):
        pass
    return None


_ONEDNN = _probe()
_enabled = _ONEDNN is not None


def use_onednn(enabled: bool) -> bool:
    """Switch the oneDNN fp32 path on or off; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, enabled and _ONEDNN is not None
    return previous


def onednn_available() -> bool:
    return _ONEDNN is not None


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _ONEDNN(x, weight, bias, "none", [], "")  # (..., N)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        x, weight = ctx.saved_tensors
        dx = dw = db = None
        dy2 = dy.reshape(-1, dy.shape[-1])  # (M, N)
        if ctx.needs_input_grad[0]:
            dx = _ONEDNN(dy, weight.t().contiguous(), None, "none", [], "")  # (..., K) = dy @ W
        if ctx.needs_input_grad[1]:
            dw = _ONEDNN(dy2.t(), x.reshape(-1, x.shape[-1]).t(), None, "none", [], "")  # (N, K) = dy^T x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0)
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` with the oneDNN fp32 CPU kernel where it applies."""
    if (
        _enabled
        and not torch.compiler.is_compiling()  # compiled graphs see a plain F.linear (inductor picks the GEMM)
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and x.numel() > 0
    ):
        return _OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and names) whose fp32 CPU matmuls go through oneDNN."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)

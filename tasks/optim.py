"""AdamW with BERT's no-decay groups, and linear warmup followed by linear or cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Biases, norms and 1-d parameters get no weight decay (BERT's rule)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_decay(warmup_steps: int, total_steps: int, schedule: str = "linear", min_ratio: float = 0.0):
    """step -> lr multiplier: linear warmup to 1, then linear or cosine decay to ``min_ratio``."""
    if schedule not in ("linear", "cosine", "constant"):
        raise ValueError(f"schedule {schedule!r} is not one of linear, cosine, constant")
    total_steps = max(total_steps, 1)

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_ratio + (1.0 - min_ratio) * shape

    return fn


IMPLEMENTATIONS = ("fused", "foreach", "for-loop")


def adamw(groups: list[dict], lr: float, betas: tuple[float, float], eps: float,
          implementation: str = "fused") -> torch.optim.AdamW:
    """AdamW with one of torch's three update kernels (the same arithmetic):

    - ``fused``: one fused kernel over all parameters (CPU and CUDA);
    - ``foreach``: the multi-tensor ops, a handful of calls per step;
    - ``for-loop``: one small op sequence per parameter tensor (torch's default on CPU).

    ``fused`` falls back to ``foreach`` where a parameter lives on a device or in a dtype the fused
    kernel does not take.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"AdamW implementation {implementation!r} is not one of {', '.join(IMPLEMENTATIONS)}")
    params = [p for g in groups for p in g["params"]]
    if implementation == "fused" and not all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params
    ):
        implementation = "foreach"
    kernel = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kernel[implementation])
    # A fused AdamW offers to unscale fp16 gradients inside its step; Lightning then refuses gradient
    # clipping under every mixed precision (bf16 included). Declining the offer lets a GradScaler
    # unscale first, as for any optimizer, so clipping works; the fused update itself is unchanged.
    opt._step_supports_amp_scaling = False
    return opt


def build_optimizer(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    warmup: float,
    total_steps: int,
    schedule: str,
    implementation: str = "fused",
) -> dict:
    """Lightning's configure_optimizers dict; ``warmup`` < 1 is a fraction of the total steps.
    ``implementation``: AdamW's update kernel (see ``adamw``; fused measured fastest here)."""
    opt = adamw(param_groups(module, weight_decay), lr, betas, eps, implementation)
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(warmup_steps, total_steps, schedule))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class PretrainingHooks:
    """Lightning hooks the pretraining systems share: ``self._log_eval(split)`` closes a validation or
    test epoch, and AdamW with the warmup schedule of ``self.hparams`` trains ``self.trainable()``
    (the whole module unless a system freezes part of it, as MERT's teachers)."""

    def trainable(self) -> nn.Module:
        return self

    def on_validation_epoch_end(self):
        self._log_eval("val")

    def on_test_epoch_end(self):
        self._log_eval("test")

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(
            self.trainable(), hp.lr, hp.weight_decay, tuple(hp.betas), hp.eps, hp.warmup,
            int(self.trainer.estimated_stepping_batches), hp.schedule,
        )

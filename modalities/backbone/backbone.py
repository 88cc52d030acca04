"""The shared BERT-style encoder stack.

Contract (STYLE.md): a frontend gives embeddings (B, T, D) and a mask (B, T); the backbone
returns hidden states of the same shape, zeros at padded positions. With an unpadded
backend the padding is removed once here, every layer runs on the N real tokens, and the
padding is restored once at the exit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import ATTENTION, AttentionInputs
from .config import BackboneConfig
from .layer import EncoderLayer, layer_norm
from .padding import pad, token_positions, unpad
from .positions import alibi_bias, alibi_slopes, rope_cos_sin


@dataclass
class EncoderOutput:
    last_hidden_state: Tensor  # (B, T, D), zeros at padded positions
    mask: Tensor  # (B, T) bool, True at real tokens
    hidden_states: tuple[Tensor, ...] | None = None  # num_layers + 1 tensors (B, T, D) on request

    def __getitem__(self, i: int) -> Tensor:  # HF habit: outputs[0] is the last hidden state
        return (self.last_hidden_state, self.hidden_states)[i]


def check_embeddings(x: Tensor, mask: Tensor | None, hidden_size: int) -> Tensor:
    """Validate a frontend's output; return the mask as bool (all ones if None)."""
    if not torch.is_tensor(x) or x.dim() != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"backbone input must be embeddings of shape (B, T, D), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"backbone input must be floating point, got {x.dtype}; embed ids first")
    if x.shape[-1] != hidden_size:
        raise ValueError(f"backbone input has width {x.shape[-1]}, the model expects {hidden_size}")
    if x.shape[1] == 0:
        raise ValueError("backbone input has length 0; give at least one token per sequence")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match embeddings {tuple(x.shape[:2])}")
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"mask must be bool or integer (1 = real token), got {mask.dtype}")
    mask = mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty} of the attention mask are all zero: every sequence needs at least one "
            "real token; drop empty sequences before batching"
        )
    return mask


class Backbone(nn.Module):
    """The layer stack. Two run-time levers, not part of the config (the weights never change):
    ``checkpointing = True`` recomputes each layer in the backward pass instead of keeping its
    activations (training only); ``compile_layers()`` hands every layer to ``torch.compile``."""

    checkpointing = False

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_layers))
        # pre-LN leaves the residual stream un-normalised: a final LayerNorm closes it
        self.final_norm = layer_norm(config) if config.norm == "pre" else None
        if config.position == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(config.num_heads), persistent=False)
        else:
            self.alibi_slopes = None

    @property
    def unpadded(self) -> bool:
        return ATTENTION.get(self.config.attention_backend).unpadded

    def set_attention_backend(self, name: str) -> None:
        """Swap every layer's attention core; the weights are untouched."""
        backend = ATTENTION.get(name)
        self.config.attention_backend = name
        for layer in self.layers:
            old = layer.attn.core
            layer.attn.core = backend(self.config)
            layer.attn.core.train(old.training)

    def compile_layers(self, **options) -> None:
        """``torch.compile`` each layer, with a dynamic token count (``options`` go to torch.compile:
        backend, mode, ...). The unpadded attention core stays eager inside the compiled layers (see
        ``UnpaddedAttention``), so a compiled model runs the same batched attention calls."""
        options.setdefault("dynamic", True)
        for layer in self.layers:
            layer.compile(**options)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, output_hidden_states: bool = False
    ) -> EncoderOutput:
        # x: (B, T, D) embeddings; mask: (B, T), 1 at real tokens
        mask = check_embeddings(x, mask, self.config.hidden_size)
        positions = token_positions(mask)  # (B, T)
        inputs = AttentionInputs()
        info = None
        if self.unpadded:
            x, info = unpad(x, mask)  # (N, D)
            inputs.unpadded = info
            positions = positions.flatten()[info.indices]  # (N,)
            if self.alibi_slopes is not None:
                span = torch.arange(info.max_seqlen, device=x.device)
                inputs.alibi = alibi_bias(span, self.alibi_slopes)  # (H, Lmax, Lmax)
            restore = lambda h: pad(h, info)  # noqa: E731
        else:
            inputs.mask = mask
            if self.alibi_slopes is not None:
                inputs.bias = alibi_bias(positions, self.alibi_slopes)  # (B, H, T, T)
            keep = mask.unsqueeze(-1)  # (B, T, 1)
            restore = lambda h: h * keep.to(h.dtype)  # noqa: E731
        cfg = self.config
        if cfg.position == "rope":
            inputs.rope = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        def band(keep):  # a boolean band over query-minus-key positions, in this forward's layout
            return _band(None, info, keep) if self.unpadded else _band(positions, None, keep)

        if cfg.causal:  # every layer: keys at or before the query's position
            inputs.band = band(lambda d: d >= 0)
        local = inputs
        if cfg.local_attention > 0:  # the local layers' inputs: a band of half-width local_attention // 2
            half = cfg.local_attention // 2
            local = replace(inputs, window=half)
            window = band(lambda d: d.abs() <= half)
            local.band = window if inputs.band is None else window & inputs.band
            if cfg.position == "rope" and cfg.local_rope_theta is not None:
                local.rope = rope_cos_sin(positions, cfg.head_dim, cfg.local_rope_theta)

        states = [restore(x)] if output_hidden_states else None
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            layer_inputs = local if layer.local else inputs
            if recompute:  # keep only the layer's input; its activations are recomputed in backward
                x = checkpoint(layer, x, layer_inputs, use_reentrant=False)
            else:
                x = layer(x, layer_inputs)
            if self.final_norm is not None and i == len(self.layers) - 1:
                x = self.final_norm(x)
            if states is not None:
                states.append(restore(x))
        last = states[-1] if states is not None else restore(x)
        return EncoderOutput(last, mask, tuple(states) if states is not None else None)


def _band(positions: Tensor | None, info, keep) -> Tensor:
    """A boolean attention band from query-minus-key position differences d: ``keep(d)``.

    Padded layout: (B, 1, T, T) from the tokens' positions; unpadded: (Lmax, Lmax) by in-sequence
    position, shared by every packed sequence."""
    if positions is None:
        span = torch.arange(info.max_seqlen, device=info.indices.device)
        return keep(span[:, None] - span[None, :])  # (Lmax, Lmax)
    return keep(positions[:, :, None] - positions[:, None, :])[:, None]  # (B, 1, T, T)

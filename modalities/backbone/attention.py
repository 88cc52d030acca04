"""Self-attention and its interchangeable cores ("attention backends").

A backend computes softmax(q k^T / sqrt(hd) + bias) v. It sees either the padded layout
(q, k, v: (B, T, H, hd)) or, when ``unpadded = True``, the packed one (q, k, v: (N, H, hd)
with ``cu_seqlens``); the backbone picks the layout once from the backend's flag. All
backends hold no parameters, so swapping one never changes the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from .config import BackboneConfig
from .dropout import fast_dropout
from .linear import Linear
from .padding import Unpadded
from .positions import apply_rope

try:  # probed once: PyTorch's flash varlen kernel (CUDA only, no bias, no dropout)
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None

ATTENTION: Registry[type[AttentionBackend]] = Registry("attention backend")
_compiled_flex = None  # torch.compile(flex_attention), built on first CUDA use
MATMUL_ON_CPU = True  # False: ``attend`` always calls torch's SDPA (the reference scripts/bench_train_step.py compares with)


@dataclass
class AttentionInputs:
    """Everything attention needs besides q/k/v, built once per forward by the backbone."""

    mask: Tensor | None = None  # (B, T) bool, padded layouts
    bias: Tensor | None = None  # (B, H, T, T) ALiBi bias, padded layouts (None without ALiBi)
    unpadded: Unpadded | None = None  # packing info, unpadded layout
    alibi: Tensor | None = None  # (H, Lmax, Lmax) ALiBi bias by in-sequence position, unpadded
    rope: tuple[Tensor, Tensor] | None = None  # cos, sin: (B, T, 1, hd) or (N, 1, hd)
    window: int | None = None  # local layers: keys within this many positions either side
    band: Tensor | None = None  # local layers: (B, 1, T, T) bool padded, (Lmax, Lmax) bool unpadded


class AttentionBackend(nn.Module):
    unpadded = False  # True: receives the packed (N, H, hd) layout

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.dropout = config.attention_dropout
        self.scale = 1.0 / math.sqrt(config.head_dim)

    @property
    def dropout_p(self) -> float:
        return self.dropout if self.training else 0.0


@ATTENTION.register("eager")
class EagerAttention(AttentionBackend):
    """Plain matmul-softmax-matmul; the reference the fused backends are tested against."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (B, H, T, T)
        scores = scores.float()
        if inputs.bias is not None:
            scores = scores + inputs.bias
        key_mask = inputs.mask[:, None, None, :]  # (B, 1, 1, T)
        if inputs.band is not None:
            key_mask = key_mask & inputs.band  # (B, 1, T, T)
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        probs = F.dropout(scores.softmax(dim=-1).to(v.dtype), self.dropout_p, self.training)
        return (probs @ v).transpose(1, 2)  # (B, T, H, hd)


@ATTENTION.register("sdpa")
class SdpaAttention(AttentionBackend):
    """torch's fused scaled_dot_product_attention on the padded batch."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        key_mask = inputs.mask[:, None, None, :]  # (B, 1, 1, T)
        if inputs.band is not None:
            key_mask = key_mask & inputs.band  # (B, 1, T, T)
        if inputs.bias is None:
            attn_mask = key_mask  # boolean: keeps the fused kernels eligible
        else:
            attn_mask = inputs.bias.masked_fill(~key_mask, float("-inf")).to(q.dtype)
        out = attend(q, k, v, attn_mask, self.dropout_p, self.scale)
        return out.transpose(1, 2)  # (B, T, H, hd)


@ATTENTION.register("unpadded")
class UnpaddedAttention(AttentionBackend):
    """Attention over packed real tokens only.

    CUDA, half precision, no ALiBi, no local window, no dropout: one flash varlen call.
    CUDA with ALiBi or a band (local / causal), no dropout: one compiled FlexAttention call over
    the packed tokens (``flex_unpadded``: a document mask, the band and ALiBi as modifications).
    Elsewhere: the sequences are grouped by length (``Unpadded.buckets``: at most 15 % padding per
    group) and each group is one batched SDPA call with its key mask, ALiBi bias and local band,
    dropout included: a handful of calls per layer, never one per sequence.
    """

    unpadded = True

    # Kept out of torch.compile graphs: the bucket list changes with every batch (how many groups,
    # their lengths), so a traced loop would recompile per batch and, past dynamo's recompile limit,
    # silently run uncompiled; left eager it is the same few batched SDPA calls, and the per-token
    # work around it (norms, projections, MLP) compiles once with a dynamic token count.
    @torch.compiler.disable
    def forward(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        info = inputs.unpadded
        if (
            _varlen_attn is not None
            and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16)
            and inputs.alibi is None
            and inputs.band is None
            and self.dropout_p == 0.0
        ):
            cu = info.cu_seqlens
            return _varlen_attn(q, k, v, cu, cu, info.max_seqlen, info.max_seqlen, scale=self.scale)
        if q.is_cuda and self.dropout_p == 0.0 and _flex_available():
            global _compiled_flex
            if _compiled_flex is None:
                from torch.nn.attention.flex_attention import flex_attention

                _compiled_flex = torch.compile(flex_attention, dynamic=True)
            return flex_unpadded(q, k, v, inputs, self.scale, _compiled_flex)
        if info.dense:  # every sequence as long as the batch: one call on views, no gathers
            B, T = info.batch, info.length
            qb, kb, vb = (t.view(B, T, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
            o = attend(qb, kb, vb, _mask_of(inputs, T, q.dtype), self.dropout_p, self.scale)
            return o.transpose(1, 2).reshape(q.shape)  # (N, H, hd)
        rows, outs = [], []
        buckets = info.buckets()
        if "gather" not in info.cache:  # every bucket's slots in one index: shared by the layers
            info.cache["gather"] = torch.cat([b.gather.flatten() for b in buckets])
        sizes = [b.gather.numel() for b in buckets]
        # one gather per tensor (its backward: one scatter-add), not one per bucket (a zero-filled
        # (N, H, hd) gradient per bucket, summed: the largest cost of a bf16 step in the profile)
        # index_select, not t[index]: 2.8x faster gather + backward in bf16 on this CPU, same values
        slots = [t.index_select(0, info.cache["gather"]).split(sizes) for t in (q, k, v)]  # each: per bucket (b * L, H, hd)
        for bucket, *qkv in zip(buckets, *slots, strict=True):
            b, L = bucket.valid.shape
            qb, kb, vb = (t.view(b, L, *t.shape[1:]).transpose(1, 2) for t in qkv)  # (b, H, L, hd)
            mask = _mask_of(inputs, L, q.dtype)  # (L, L) band, (H, L, L) ALiBi, or None
            if not bucket.full:
                keys = bucket.valid[:, None, None, :]  # (b, 1, 1, L)
                if mask is None:
                    mask = keys
                elif mask.dtype == torch.bool:
                    mask = mask & keys
                else:
                    mask = torch.where(keys, mask, float("-inf"))  # (b, H, L, L)
            o = attend(qb, kb, vb, mask, self.dropout_p, self.scale)
            outs.append(o.transpose(1, 2)[bucket.valid])  # (n, H, hd) real slots only
            rows.append(bucket.scatter)
        if len(outs) == 1 and bucket.full:
            return outs[0]  # sequences of one length: one full bucket, already in packed order
        return q.new_empty(q.shape).index_copy(0, torch.cat(rows), torch.cat(outs))  # (N, H, hd)


@ATTENTION.register("unpadded_loop")
class UnpaddedLoopAttention(AttentionBackend):
    """The reference for ``unpadded``: one SDPA call per sequence on its own slice."""

    unpadded = True

    def forward(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        outs = []
        start = 0
        for length in inputs.unpadded.seqlens:
            end = start + length
            qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, L, hd)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=_mask_of(inputs, length, q.dtype),
                                               dropout_p=self.dropout_p)
            outs.append(o[0].transpose(0, 1))  # (L, H, hd)
            start = end
        return torch.cat(outs)  # (N, H, hd)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, scale: float) -> Tensor:
    """softmax(q k^T * scale + mask) v over (b, H, L, hd), dropout on the probabilities; ``mask``: bool
    (True = attend) or additive, broadcast to (b, H, L, L).

    torch's SDPA, except on CPU where three plain ops (``matmul_softmax``) beat its kernels: under
    dropout (SDPA's CPU kernel then takes its math path and draws one ``bernoulli_`` per probability;
    here ``fast_dropout`` draws a fourth as many 64-bit integers), and for a bf16 / fp16 training
    step up to 512 tokens (the CPU flash kernel's backward: MiniLM-size layers fwd+bwd 0.90x the
    CPU time on one thread, 0.77x on two). Forward only, its flash kernel wins (1.4x) and stays.
    """
    if MATMUL_ON_CPU and q.device.type == "cpu" and (
        dropout_p > 0.0
        or (q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled() and q.shape[-2] <= 512)
    ):
        return matmul_softmax(q, k, v, mask, dropout_p, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def matmul_softmax(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, scale: float) -> Tensor:
    """``attend`` as matmul, softmax, dropout, matmul, all in q's dtype (the softmax kernel accumulates
    in fp32 either way). A masked score becomes the dtype's lowest value, not -inf, so a row with
    every key masked (a padding slot's) averages the values instead of turning NaN."""
    scores = torch.matmul(q * scale, k.transpose(-1, -2))  # (b, H, L, L)
    if mask is not None:
        low = torch.finfo(scores.dtype).min
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, low)
        else:
            scores = scores + mask.to(scores.dtype).clamp_min(low)
    probs = fast_dropout(scores.softmax(dim=-1), dropout_p)
    return torch.matmul(probs, v)


def _flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - older torch
        return False
    return True


def flex_unpadded(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, scale: float, kernel=None) -> Tensor:
    """FlexAttention over the packed (N, H, hd) tokens: one call for the whole batch.

    The block mask keeps a key when it is in the query's sequence (and inside the band, local or
    causal, when there is one); ALiBi is a score modification read from the (H, Lmax, Lmax) table by
    in-sequence positions. The block mask is built once per forward and band, shared by the layers.
    ``kernel``: a compiled ``flex_attention`` (CUDA); None runs torch's uncompiled reference, which
    is how the CPU tests check the masks (FlexAttention has no CPU backward in torch 2.14).
    """
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    info = inputs.unpadded
    doc, pos = info.documents()
    band, alibi = inputs.band, inputs.alibi
    key = ("flex", inputs.window, band is not None)
    if key not in info.cache:
        if band is None:
            def keep(b, h, qi, ki):
                return doc[qi] == doc[ki]
        else:
            def keep(b, h, qi, ki):
                return (doc[qi] == doc[ki]) & band[pos[qi], pos[ki]]
        N = q.shape[0]
        info.cache[key] = create_block_mask(keep, None, None, N, N, device=q.device)
    score_mod = None
    if alibi is not None:
        def score_mod(score, b, h, qi, ki):
            return score + alibi[h, pos[qi], pos[ki]]
    run = kernel if kernel is not None else flex_attention
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, N, hd)
    out = run(q, k, v, score_mod=score_mod, block_mask=info.cache[key], scale=scale)
    return out[0].transpose(0, 1)  # (N, H, hd)


def _mask_of(inputs: AttentionInputs, length: int, dtype: torch.dtype) -> Tensor | None:
    """The attention mask of one packed sequence of ``length`` tokens: ALiBi bias, local band, both, or None."""
    band = None if inputs.band is None else inputs.band[:length, :length]  # (L, L) bool
    if inputs.alibi is None:
        return band
    bias = inputs.alibi[:, :length, :length].to(dtype)  # (H, L, L)
    return bias if band is None else bias.masked_fill(~band, float("-inf"))


class SelfAttention(nn.Module):
    """Fused QKV projection, optional RoPE, a backend core, output projection."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        D = config.hidden_size
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = Linear(D, 3 * D, bias=config.bias)  # rows: [query; key; value]
        self.out = Linear(D, D, bias=config.bias)
        self.core = ATTENTION.get(config.attention_backend)(config)

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # (..., 3, H, hd)
        q, k, v = qkv.unbind(-3)  # each (..., H, hd)
        if inputs.rope is not None:
            q, k = apply_rope(q, *inputs.rope), apply_rope(k, *inputs.rope)
        ctx = self.core(q, k, v, inputs)  # (..., H, hd)
        return self.out(ctx.flatten(-2))  # (..., D)

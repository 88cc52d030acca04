"""The CPU attention path: matmul-softmax-matmul where torch's SDPA kernels are slow (dropout, bf16),
the backbone's fast dropout, and that both keep what they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalities.backbone import Backbone, BackboneConfig
from modalities.backbone.attention import attend, matmul_softmax
from modalities.backbone.dropout import FastDropout, fast_dropout


def _qkv(b=3, H=2, L=7, hd=8, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, H, L, hd, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3)]


@pytest.mark.parametrize("mask_kind", ["none", "keys", "alibi"])
def test_matmul_softmax_equals_sdpa_in_fp32_with_every_mask_kind(mask_kind):
    q, k, v = _qkv()
    mask = None
    if mask_kind == "keys":
        mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
        mask = mask[:, None, None, :]  # (b, 1, 1, L)
    elif mask_kind == "alibi":
        pos = torch.arange(7.0)
        mask = -(pos[None, :] - pos[:, None]).abs() * torch.tensor([0.5, 0.25])[:, None, None]  # (H, L, L)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = matmul_softmax(q, k, v, mask, 0.0, 8**-0.5)
    assert torch.allclose(got, want, atol=1e-5)


def test_a_row_with_every_key_masked_stays_finite_in_value_and_gradient():
    q, k, v = _qkv(grad=True)
    keys = torch.zeros(3, 1, 1, 7, dtype=torch.bool)
    keys[0] = True  # sequences 1 and 2: every key masked (padding slots)
    additive = torch.where(keys, 0.0, float("-inf")).expand(3, 2, 7, 7)
    for mask in (keys, additive):
        out = matmul_softmax(q, k, v, mask, 0.0, 8**-0.5)
        out.sum().backward()
        assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))
        for t in (q, k, v):
            t.grad = None


def test_bf16_on_cpu_takes_the_matmul_path_and_stays_within_bf16_of_fp32(monkeypatch):
    q, k, v = _qkv(L=40, hd=16)
    want = F.scaled_dot_product_attention(q, k, v)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    got = attend(qb, kb, vb, None, 0.0, 16**-0.5)
    assert not calls and got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.03
    got.float().sum().backward()  # gradients through the bf16 path are close to fp32 SDPA's
    q32, k32, v32 = (t.clone().requires_grad_() for t in (q, k, v))
    sdpa(q32, k32, v32).sum().backward()
    for a, b in ((qb, q32), (kb, k32), (vb, v32)):
        assert (a.grad.float() - b.grad).abs().max() < 0.05 * b.grad.abs().max()
    attend(q, k, v, None, 0.0, 16**-0.5)  # fp32 without dropout: torch's fused kernel
    with torch.no_grad():
        attend(qb, kb, vb, None, 0.0, 16**-0.5)  # bf16 forward only: the fused kernel as well
    assert calls == [1, 1]


def test_attention_dropout_on_cpu_drops_p_of_the_probabilities_and_keeps_the_expectation():
    torch.manual_seed(0)
    b, H, L = 64, 4, 50
    q = k = torch.zeros(b, H, L, 8)  # uniform probabilities 1 / L
    v = torch.ones(b, H, L, 8)
    out = attend(q, k, v, None, 0.25, 1.0)  # each output = (kept keys / L) / 0.75
    kept = out[..., 0] * 0.75 * L
    assert torch.allclose(kept, kept.round(), atol=1e-3)  # a whole number of keys survives
    assert abs(kept.mean().item() / L - 0.75) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.01
    torch.manual_seed(3)
    a = attend(q, k, v, None, 0.25, 1.0)
    torch.manual_seed(3)
    assert torch.equal(a, attend(q, k, v, None, 0.25, 1.0))  # torch's seed decides the masks


def test_fast_dropout_draws_p_of_zeros_and_is_plain_dropout_off_cpu_or_in_eval():
    torch.manual_seed(0)
    y = fast_dropout(torch.ones(200_001), 0.1)  # an element count that is not a multiple of four
    assert abs((y == 0).float().mean().item() - 0.1) < 0.003
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    x = torch.randn(5)
    assert fast_dropout(x, 0.5, training=False) is x and fast_dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="dropout must be in"):
        fast_dropout(x, 1.0)


def test_the_backbone_draws_its_dropouts_from_fast_dropout_and_the_seed_decides_them():
    cfg = BackboneConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, hidden_dropout=0.3,
                         attention_dropout=0.2, attention_backend="unpadded")
    model = Backbone(cfg).train()
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert any(isinstance(m, FastDropout) and m.p == 0.3 for m in model.modules())
    x = torch.randn(2, 9, 16)
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4], dtype=torch.bool)
    torch.manual_seed(1)
    a = model(x, mask).last_hidden_state
    torch.manual_seed(1)
    b = model(x, mask).last_hidden_state
    torch.manual_seed(2)
    c = model(x, mask).last_hidden_state
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_batch_without_padding_skips_the_gathers_and_equals_eager_in_values_and_gradients(monkeypatch):
    cfg = BackboneConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, hidden_dropout=0.0,
                         attention_dropout=0.0, position="alibi", attention_backend="unpadded")
    torch.manual_seed(0)
    model = Backbone(cfg)
    x = torch.randn(3, 6, 16, requires_grad=True)
    mask = torch.ones(3, 6, dtype=torch.bool)
    gathers = []
    select = torch.Tensor.index_select
    monkeypatch.setattr(torch.Tensor, "index_select", lambda *a, **kw: gathers.append(1) or select(*a, **kw))
    got = model(x, mask).last_hidden_state
    assert not gathers  # the dense path: views, one attention call per layer
    got.pow(2).sum().backward()
    g_got = x.grad.clone()
    x.grad = None
    model.set_attention_backend("eager")
    want = model(x, mask).last_hidden_state
    want.pow(2).sum().backward()
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(g_got, x.grad, atol=1e-5)

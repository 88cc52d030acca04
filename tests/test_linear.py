"""The oneDNN fp32 linear path gives F.linear's values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from modalities.backbone.linear import Linear, linear, onednn_available, use_onednn

pytestmark = pytest.mark.skipif(not onednn_available(), reason="oneDNN linear kernel not available in this torch")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24)])
def test_values_and_gradients_match_f_linear(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(40, 24, requires_grad=True)
    b = torch.randn(40, requires_grad=True) if bias else None
    g = torch.randn(*shape[:-1], 40)
    y = linear(x, w, b)
    assert y.grad_fn is not None and "OneDnn" in type(y.grad_fn).__name__  # the fast path really ran
    grads = torch.autograd.grad((y * g).sum(), [x, w] + ([b] if bias else []))
    y_ref = F.linear(x, w, b)
    refs = torch.autograd.grad((y_ref * g).sum(), [x, w] + ([b] if bias else []))
    assert torch.allclose(y, y_ref, atol=1e-4, rtol=1e-5)
    for ours, theirs in zip(grads, refs, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-5)


def test_switch_and_fallbacks():
    layer = Linear(8, 4)
    x = torch.randn(2, 8, requires_grad=True)
    previous = use_onednn(False)
    try:
        assert "OneDnn" not in type(layer(x).grad_fn).__name__
    finally:
        use_onednn(previous)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps its own bf16 kernel
        assert layer(x).dtype == torch.bfloat16
    assert layer.double()(x.double()).dtype == torch.float64  # other dtypes: plain F.linear
    assert set(layer.state_dict()) == {"weight", "bias"}  # checkpoints are nn.Linear's

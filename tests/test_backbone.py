"""The backbone: every attention backend agrees, hidden states, bf16, and its bad-input errors."""

import pytest
import torch
from conftest import ragged_mask

from modalities.backbone import (
    ATTENTION,
    Backbone,
    BackboneConfig,
    TokenEncoderConfig,
    create_encoder,
)
from modalities.backbone.padding import pad, unpad

BACKENDS = ATTENTION.names()


def tiny(**kw) -> BackboneConfig:
    base = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, hidden_dropout=0.0,
                attention_dropout=0.0)
    base.update(kw)
    return BackboneConfig(**base)


def test_registry_lists_the_three_backends():
    assert {"eager", "sdpa", "unpadded"} <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown attention backend 'flash3'.*eager"):
        Backbone(tiny(attention_backend="flash3"))


@pytest.mark.parametrize("position", ["absolute", "alibi", "rope", "none"])
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("activation", ["gelu", "geglu", "swiglu"])
def test_backends_agree_on_ragged_batches(position, norm, activation):
    torch.manual_seed(0)
    model = Backbone(tiny(position=position, norm=norm, activation=activation)).eval()
    lengths = [7, 1, 12, 4]
    x = torch.randn(4, 12, 32)
    mask = ragged_mask(lengths)
    outs = {}
    for name in BACKENDS:
        model.set_attention_backend(name)
        with torch.no_grad():
            outs[name] = model(x, mask, output_hidden_states=True)
    ref = outs["eager"]
    for name, out in outs.items():
        assert len(out.hidden_states) == 3  # embeddings + 2 layers
        for h, h_ref in zip(out.hidden_states, ref.hidden_states, strict=True):
            assert (h - h_ref).abs().max() < 1e-5, name
        assert out.last_hidden_state[~mask].abs().max() == 0  # padded positions are zero
        assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_padding_content_does_not_leak():
    torch.manual_seed(0)
    for name in BACKENDS:
        model = Backbone(tiny(attention_backend=name, position="alibi")).eval()
        x = torch.randn(2, 6, 32)
        mask = ragged_mask([3, 6])
        y1 = model(x, mask).last_hidden_state
        x2 = x.clone()
        x2[0, 3:] = 100.0  # garbage at padded positions
        y2 = model(x2, mask).last_hidden_state
        assert torch.allclose(y1, y2, atol=1e-6), name


def test_gradients_agree_between_backends():
    torch.manual_seed(0)
    model = Backbone(tiny(position="rope"))
    x = torch.randn(3, 9, 32, requires_grad=True)
    proj = torch.randn(32)  # a random direction: sums of powers of LayerNorm outputs are constant (no gradient)
    mask = ragged_mask([9, 2, 5])
    grads = {}
    for name in BACKENDS:
        model.set_attention_backend(name)
        model.zero_grad()
        x.grad = None
        (model(x, mask).last_hidden_state * proj).sum().backward()
        grads[name] = (x.grad.clone(), model.layers[0].attn.qkv.weight.grad.clone())
    for name, (gx, gw) in grads.items():
        assert torch.allclose(gx, grads["eager"][0], atol=1e-5), name
        assert torch.allclose(gw, grads["eager"][1], atol=1e-4), name


def test_unpad_pad_round_trip():
    x = torch.randn(3, 5, 4)
    mask = ragged_mask([5, 2, 3])
    packed, info = unpad(x, mask)
    assert packed.shape == (10, 4)
    assert info.cu_seqlens.tolist() == [0, 5, 7, 10] and info.max_seqlen == 5
    back = pad(packed, info)
    assert torch.equal(back[mask], x[mask]) and back[~mask].abs().sum() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_autocast_on_cpu(backend):
    torch.manual_seed(0)
    enc = create_encoder("bert-tiny", attention_backend=backend, hidden_dropout=0.0, attention_dropout=0.0).eval()
    ids = torch.randint(5, 1000, (2, 10))
    mask = ragged_mask([10, 6])
    with torch.no_grad():
        ref = enc(input_ids=ids, attention_mask=mask).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = enc(input_ids=ids, attention_mask=mask).last_hidden_state
    err = (out.float() - ref)[mask].abs().max()
    assert 0 < err < 0.1  # bf16 really ran (not bit-equal) and stayed close


def test_token_encoder_hf_style_call():
    enc = create_encoder("bert-tiny").eval()
    out = enc(input_ids=torch.randint(0, 100, (2, 8)), attention_mask=torch.ones(2, 8, dtype=torch.long),
              output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 8, 128)
    assert len(out.hidden_states) == 3 and out[0] is out.last_hidden_state


# --- bad input: a clear ValueError that names the problem --------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(input_ids=torch.randint(0, 10, (8,))), r"give a batch \(B, T\)"),
        (lambda m: m(input_ids=torch.rand(2, 8)), "must be an integer tensor"),
        (lambda m: m(input_ids=torch.full((2, 8), 5000)), "id 5000, outside the table of 1000 rows"),
        (lambda m: m(input_ids=torch.full((2, 8), -1)), "id -1, outside"),
        (lambda m: m(input_ids=torch.ones(2, 40, dtype=torch.long)), "length 40 but the position table allows 32"),
        (lambda m: m(input_ids=torch.ones(2, 8, dtype=torch.long), attention_mask=torch.ones(2, 7)), "does not match"),
        (
            lambda m: m(input_ids=torch.ones(2, 8, dtype=torch.long),
                        attention_mask=torch.tensor([[1] * 8, [0] * 8])),
            r"rows \[1\] of the attention mask are all zero",
        ),
        (lambda m: m(input_ids=torch.ones(2, 8, dtype=torch.long), attention_mask=torch.rand(2, 8)), "bool or integer"),
        (lambda m: m(input_ids=torch.ones(2, 8, dtype=torch.long), token_type_ids=torch.full((2, 8), 3)), "token_type_ids holds id 3"),
    ],
)
def test_bad_token_input(call, match):
    cfg = TokenEncoderConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                             max_position_embeddings=32)
    from modalities import TokenEncoder

    with pytest.raises(ValueError, match=match):
        call(TokenEncoder(cfg))


def test_bad_backbone_input():
    model = Backbone(tiny())
    with pytest.raises(ValueError, match=r"shape \(B, T, D\)"):
        model(torch.randn(4, 32))
    with pytest.raises(ValueError, match="width 16, the model expects 32"):
        model(torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.ones(2, 4, 32, dtype=torch.long))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(hidden_size=30, num_heads=4), "not divisible"),
        (dict(activation="gelu2"), "activation 'gelu2'"),
        (dict(position="sinusoid"), "position 'sinusoid'"),
        (dict(norm="sandwich"), "norm 'sandwich'"),
        (dict(num_layers=0), "num_layers must be >= 1"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_alibi_and_rope_run_past_the_position_table():
    enc = create_encoder("bert-tiny", position="alibi", max_position_embeddings=16).eval()
    assert enc(input_ids=torch.randint(5, 100, (1, 40))).last_hidden_state.shape == (1, 40, 128)


@pytest.mark.parametrize("position", ["alibi", "rope"])
def test_unpadded_equal_lengths_take_the_batched_path(position):
    torch.manual_seed(0)
    model = Backbone(tiny(position=position)).eval()
    x, mask = torch.randn(3, 8, 32), torch.ones(3, 8, dtype=torch.bool)
    ref = model(x, mask).last_hidden_state
    model.set_attention_backend("unpadded")
    assert (model(x, mask).last_hidden_state - ref).abs().max() < 1e-5


@pytest.mark.parametrize("position", ["absolute", "alibi", "rope"])
def test_unpadded_attention_batches_sequences_by_length_not_one_call_each(position, monkeypatch):
    import modalities.backbone.attention as attention

    calls = []
    sdpa = attention.F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    torch.manual_seed(0)
    lengths = torch.randint(16, 257, (32,)).tolist()  # the benchmark's ragged batch
    model = create_encoder("bert-tiny", position=position, attention_backend="unpadded",
                                      max_position_embeddings=256, local_attention=64 if position == "rope" else 0).eval()
    mask = ragged_mask(lengths)
    ids = torch.randint(5, 100, mask.shape)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    per_layer = len(calls) / model.config.num_layers
    assert per_layer <= 8, f"{per_layer} attention calls per layer for 32 sequences"
    padded_slots = sum(s[0] * s[2] for s in calls) / model.config.num_layers
    assert padded_slots <= 1.15 * sum(lengths)  # at most 15 % padding
    model.set_attention_backend("unpadded_loop")
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (out - ref)[mask].abs().max() < 1e-5


@pytest.mark.parametrize("position", ["absolute", "alibi", "rope"])
@pytest.mark.parametrize("local", [0, 4])
def test_causal_attention_agrees_across_backends_and_never_looks_ahead(position, local):
    torch.manual_seed(0)
    model = Backbone(tiny(position=position, causal=True, local_attention=local,
                          global_attn_every_n_layers=2)).eval()
    lengths = [9, 1, 12, 5]
    x = torch.randn(4, 12, 32)
    mask = ragged_mask(lengths)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(4, 6, 32)  # change every token from position 6 on
    outs = {}
    for name in BACKENDS:
        model.set_attention_backend(name)
        with torch.no_grad():
            outs[name] = model(x, mask).last_hidden_state
            later = model(x2, mask).last_hidden_state
        # the first six positions cannot see what changed after them
        assert (outs[name][:, :6] - later[:, :6]).abs().max() < 1e-5, name
        assert (outs[name][0, 6:9] - later[0, 6:9]).abs().max() > 1e-3, name
    for name, out in outs.items():
        assert (out - outs["eager"]).abs().max() < 1e-5, name
    bidirectional = Backbone(tiny(position=position, local_attention=local, global_attn_every_n_layers=2)).eval()
    bidirectional.load_state_dict(model.state_dict())
    with torch.no_grad():
        full = bidirectional(x, mask).last_hidden_state
    assert (full[0, :8] - outs["eager"][0, :8]).abs().max() > 1e-3  # causal is not a no-op


# --- run-time levers: torch.compile and activation checkpointing ---------------------------
def _counting_sdpa(monkeypatch):
    import modalities.backbone.attention as attention

    calls = []
    sdpa = attention.F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    return calls


def test_a_compiled_unpadded_model_runs_the_same_batched_attention_calls_and_compiles_once(monkeypatch):
    import torch._dynamo

    torch._dynamo.reset()
    graphs = []

    def recording_backend(gm, example_inputs):  # dynamo's graphs, run as traced (no inductor: fast)
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    model = Backbone(tiny(position="alibi", attention_backend="unpadded", attention_dropout=0.1,
                          local_attention=4, global_attn_every_n_layers=2))  # ALiBi, a local band, dropout
    compiled = Backbone(model.config)
    compiled.load_state_dict(model.state_dict())
    compiled.compile_layers(backend=recording_backend)
    model.eval(), compiled.eval()
    calls = _counting_sdpa(monkeypatch)
    lengths = torch.randint(2, 40, (24,), generator=torch.Generator().manual_seed(0)).tolist()
    for batch in (lengths, lengths[:17]):  # a second batch of another shape: no recompilation
        mask = ragged_mask(batch)
        x = torch.randn(*mask.shape, 32)
        with torch.no_grad():
            ref = model(x, mask).last_hidden_state
            eager_calls = len(calls)
            out = compiled(x, mask).last_hidden_state
        compiled_calls = len(calls) - eager_calls
        assert (out - ref)[mask].abs().max() < 1e-5
        assert compiled_calls == eager_calls <= 8 * 2  # the same bucketed calls, never one per sequence
        calls.clear()
        if batch is lengths:
            first = len(graphs)
    assert first > 0 and len(graphs) == first  # compiled graphs exist and the new shape reused them
    assert not any("scaled_dot_product_attention" in str(g.graph) for g in graphs)  # the core stays eager


def test_activation_checkpointing_gives_the_same_gradients_and_keeps_less_for_backward():
    torch.manual_seed(0)
    model = Backbone(tiny(attention_backend="unpadded", hidden_dropout=0.1, attention_dropout=0.1)).train()
    mask = ragged_mask([9, 3, 12])
    x = torch.randn(3, 12, 32)
    proj = torch.randn(32)  # a random direction: sums of powers of LayerNorm outputs have no gradient
    grads, kept = {}, {}
    for on in (False, True):
        model.checkpointing = on
        model.zero_grad()
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel()
            return t

        torch.manual_seed(1)  # the same dropout masks: checkpointing replays the RNG state
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x, mask).last_hidden_state
        (out * proj).sum().backward()
        grads[on] = [p.grad.clone() for p in model.parameters()]
        kept[on] = total
    assert grads[False][0].abs().max() > 1e-2  # real gradients
    for g_on, g_off in zip(grads[True], grads[False], strict=True):
        assert torch.allclose(g_on, g_off, atol=1e-6)
    assert kept[True] < 0.5 * kept[False]


def test_flex_attention_over_packed_tokens_agrees_with_the_per_sequence_reference():
    # the CUDA path for ALiBi and bands; run here by torch's uncompiled FlexAttention (forward only on CPU)
    from modalities.backbone.attention import flex_unpadded

    torch.manual_seed(0)
    model = Backbone(tiny(position="alibi", causal=True, local_attention=4, global_attn_every_n_layers=2,
                          attention_backend="unpadded_loop")).eval()  # ALiBi, a causal and a local band
    captured = []
    core = model.layers[-1].attn.core  # layer 1 of 2: local
    core.register_forward_hook(lambda m, args, out: captured.append((args, out)))
    mask = ragged_mask([7, 1, 12, 4])
    with torch.no_grad():
        model(torch.randn(4, 12, 32), mask)
        (q, k, v, inputs), ref = captured[0]
        out = flex_unpadded(q, k, v, inputs, core.scale)
    assert inputs.alibi is not None and inputs.window == 2
    assert (out - ref).abs().max() < 1e-5

"""MERT-v1 layout: parity with transformers' HubertModel (both layouts, ragged batches), import paths, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import HubertConfig, HubertModel

import modalities
from modalities.audio import AudioEncoder, create_audio_encoder
from modalities.audio.hf_mert import config_from_hf

LENGTHS = [8000, 5003, 1200]  # samples: a ragged batch (24, 15 and 3 frames)


def hf_config(stable: bool) -> HubertConfig:
    # the MERT-v1 layout at test size: 7 convs (10,5),(3,2)x4,(2,2)x2, no conv bias, GELU
    return HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=[16] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=False, feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, mask_time_prob=0.05,
    )


def mert_folder(tmp_path, stable: bool, legacy_weight_norm: bool = False):
    """A folder shaped like an HF MERT-v1 release: config.json (model_type mert_model) + safetensors."""
    torch.manual_seed(0)
    hf = HubertModel(hf_config(stable)).eval()
    folder = tmp_path / ("mert-330m-like" if stable else "mert-95m-like")
    hf.save_pretrained(folder)
    raw = json.loads((folder / "config.json").read_text())
    raw.update(model_type="mert_model", sample_rate=24000, attention_relax=32.0, deepnorm=False,
               feature_extractor_cqt=False)
    (folder / "config.json").write_text(json.dumps(raw))
    if legacy_weight_norm:  # the released files use weight_g / weight_v
        sd = load_file(folder / "model.safetensors")
        sd = {k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}
        save_file(sd, folder / "model.safetensors")
    return hf, folder


def ragged_batch():
    g = torch.Generator().manual_seed(1)
    wav = torch.zeros(len(LENGTHS), max(LENGTHS))
    mask = torch.zeros_like(wav, dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        wav[i, :n] = torch.randn(n, generator=g)
        mask[i, :n] = 1
    return wav, mask


@pytest.mark.parametrize("backend", ["eager", "sdpa", "unpadded"])
def test_post_ln_95m_layout_matches_hf_clip_by_clip(tmp_path, backend):
    hf, folder = mert_folder(tmp_path, stable=False, legacy_weight_norm=True)
    enc = modalities.load_encoder(folder, attention_backend=backend)
    assert isinstance(enc, AudioEncoder) and enc.config.norm == "post"
    wav, mask = ragged_batch()
    with torch.no_grad():
        ours = enc(input_values=wav, attention_mask=mask, output_hidden_states=True)
        batch = hf(wav, attention_mask=mask, output_hidden_states=True)
        assert len(ours.hidden_states) == len(batch.hidden_states) == 3
        worst_hf_batch = 0.0
        for i, n in enumerate(LENGTHS):
            alone = hf(wav[i : i + 1, :n], output_hidden_states=True)
            T = alone.last_hidden_state.shape[1]
            assert int(ours.mask[i].sum()) == T
            for a, b in zip(ours.hidden_states, alone.hidden_states, strict=True):
                assert (a[i, :T] - b[0]).abs().max() < 1e-4
                assert not a[i, T:].any()  # padded frames are zeros
            worst_hf_batch = max(worst_hf_batch, (batch.last_hidden_state[i, :T] - alone.last_hidden_state[0]).abs().max())
    # HF's first-conv GroupNorm takes its statistics over the padding too: its padded clips
    # change with the batch (documented in frontend.py); ours equal each clip run alone
    assert worst_hf_batch > 1e-2


def test_pre_ln_330m_layout_matches_hf_ragged_batch(tmp_path):
    hf, folder = mert_folder(tmp_path, stable=True)
    enc = modalities.load_encoder(folder)
    assert enc.config.norm == "pre" and enc.config.feat_extract_norm == "layer"
    assert "attention_relax" in enc.meta["ignored"]
    wav, mask = ragged_batch()
    with torch.no_grad():
        ours = enc(input_values=wav, attention_mask=mask, output_hidden_states=True)
        theirs = hf(wav, attention_mask=mask, output_hidden_states=True)
    real = ours.mask
    assert real.sum(1).tolist() == [24, 15, 3]
    # transformers 5 records hidden_states[-1] before the final LayerNorm; MERT-era transformers 4
    # (and we) return it after, equal to last_hidden_state
    theirs_states = (*theirs.hidden_states[:-1], theirs.last_hidden_state)
    assert len(ours.hidden_states) == len(theirs_states) == 3
    for a, b in zip(ours.hidden_states, theirs_states, strict=True):
        assert (a[real] - b[real]).abs().max() < 1e-4
    assert torch.equal(ours.hidden_states[-1], ours.last_hidden_state)


def test_masked_frames_use_masked_spec_embed_as_hf(tmp_path):
    hf, folder = mert_folder(tmp_path, stable=False)
    enc = modalities.load_encoder(folder)
    wav = torch.randn(2, 4000)
    T = enc.config.num_frames(4000)
    span = torch.zeros(2, T, dtype=torch.bool)
    span[:, 2:7] = True
    with torch.no_grad():
        ours = enc(input_values=wav, mask_time_indices=span).last_hidden_state
        theirs = hf(wav, mask_time_indices=span).last_hidden_state
    assert (ours - theirs).abs().max() < 1e-4


def test_plain_pos_conv_weight_and_prefix_import(tmp_path):
    hf, folder = mert_folder(tmp_path, stable=False)
    sd = {f"hubert.{k}": v for k, v in hf.state_dict().items()}
    g = sd.pop("hubert.encoder.pos_conv_embed.conv.parametrizations.weight.original0")
    v = sd.pop("hubert.encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    sd["hubert.encoder.pos_conv_embed.conv.weight"] = g * v / v.norm(dim=(0, 1), keepdim=True)
    sd["final_proj.weight"] = torch.zeros(4, 32)  # a pretraining head: dropped with its reason
    save_file(sd, folder / "model.safetensors")
    enc = modalities.load_encoder(folder)
    assert "final_proj.weight" in enc.meta["dropped"]
    wav = torch.randn(1, 3000)
    with torch.no_grad():
        assert (enc(input_values=wav).last_hidden_state - hf(wav).last_hidden_state).abs().max() < 1e-4


def test_unknown_keys_and_refused_options_name_themselves(tmp_path):
    hf, folder = mert_folder(tmp_path, stable=False)
    sd = load_file(folder / "model.safetensors")
    sd["encoder.mystery.weight"] = torch.zeros(2)
    save_file(sd, folder / "model.safetensors")
    with pytest.raises(KeyError, match="encoder.mystery.weight"):
        modalities.load_encoder(folder)
    raw = json.loads((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="deepnorm"):
        config_from_hf({**raw, "deepnorm": True})
    with pytest.raises(ValueError, match="feature_extractor_cqt"):
        config_from_hf({**raw, "feature_extractor_cqt": True})


def test_save_and_reload_tessera_folder(tmp_path):
    enc = create_audio_encoder("mert-tiny").eval()
    modalities.save_encoder(enc, tmp_path / "ckpt")
    back = modalities.load_encoder(tmp_path / "ckpt")
    wav = torch.randn(2, 6000)
    with torch.no_grad():
        assert torch.equal(enc(input_values=wav).last_hidden_state, back(input_values=wav).last_hidden_state)


def test_real_sizes_have_mert_shapes():
    for name, layers, states in (("mert-v1-95m", 12, 13), ("mert-v1-330m", 24, 25)):
        cfg = modalities.hub.PRESETS.get(name)()
        assert cfg.num_layers + 1 == states and cfg.num_layers == layers
        assert cfg.hop_length == 320 and cfg.sample_rate // cfg.hop_length == 75
        assert cfg.receptive_field == 400 and cfg.num_frames(24000 * 5) == 374


def test_clip_features_do_not_depend_on_batch_padding():
    enc = create_audio_encoder("mert-tiny").eval()
    wav, mask = ragged_batch()
    with torch.no_grad():
        batch = enc(input_values=wav, attention_mask=mask).last_hidden_state
        alone = enc(input_values=wav[1:2, : LENGTHS[1]]).last_hidden_state
    assert (batch[1, : alone.shape[1]] - alone[0]).abs().max() < 1e-5


@pytest.mark.parametrize(
    "wav, mask, match",
    [
        (torch.full((2, 4000), float("nan")), None, "NaN"),
        (torch.zeros(2, 399), None, "receptive field"),
        (torch.zeros(2, 2, 4000), None, "mono"),
        (torch.zeros(2, 4000, dtype=torch.int16), None, "float"),
        (torch.zeros(2, 4000), torch.tensor([[0, 1] * 2000] * 2), "prefix"),
    ],
    ids=["nan", "too-short", "stereo", "int-pcm", "left-padded"],
)
def test_bad_waveforms_raise_clear_errors(wav, mask, match):
    enc = create_audio_encoder("mert-tiny")
    with pytest.raises(ValueError, match=match):
        enc(input_values=wav, attention_mask=mask)


def padded_frontend_reference(frontend, wav, mask, mask_time_indices=None):
    """The frontend as it was before it ran clip by clip: the conv stack over the padded batch, the
    first conv's GroupNorm on each clip's real steps (var_mean + scale-and-shift), padded frames
    zeroed before the positional conv."""
    import torch.nn.functional as F

    from modalities.audio.masking import length_mask

    lengths = mask.sum(-1)
    x = wav[:, None]  # (B, 1, S)
    for layer in frontend.feature_extractor.conv_layers:
        k, s = layer.conv.kernel_size[0], layer.conv.stride[0]
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        x = layer.conv(x)  # (B, C, T)
        if layer.norm_kind == "group":
            gn = layer.layer_norm
            stats = [torch.var_mean(x[b, :, :n], dim=-1, unbiased=False) for b, n in enumerate(lengths.tolist())]
            var, mean = torch.stack([v for v, _ in stats]), torch.stack([m for _, m in stats])  # (B, C)
            scale = gn.weight * torch.rsqrt(var + gn.eps)
            x = torch.addcmul((gn.bias - mean * scale)[..., None], x, scale[..., None])
        elif layer.norm_kind == "layer":
            x = layer.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        x = F.gelu(x)
    frame_mask = length_mask(lengths, x.shape[-1])  # (B, T)
    h = frontend.feature_projection(x.transpose(1, 2))  # (B, T, D)
    if mask_time_indices is not None:
        h = torch.where(mask_time_indices[..., None], frontend.masked_spec_embed, h)
    h = h * frame_mask[..., None]
    h = h + frontend.pos_conv_embed(h)
    return (frontend.layer_norm(h) if frontend.layer_norm is not None else h), frame_mask


@pytest.mark.parametrize("layout", ["group", "layer"])
def test_clip_by_clip_frontend_matches_the_padded_batch_computation_in_fp32(layout):
    torch.manual_seed(0)
    enc = create_audio_encoder("mert-tiny", feat_extract_norm=layout).eval()
    wav, mask = ragged_batch()
    wav = torch.cat([wav, wav[:1]])  # two clips of one length: one batched call for both
    mask = torch.cat([mask, mask[:1]])
    masked = torch.rand(mask.shape[0], enc.config.num_frames(wav.shape[1])) < 0.3
    proj = torch.randn(enc.config.hidden_size)
    grads = []
    for run in (lambda: padded_frontend_reference(enc.frontend, wav, mask, masked),
                lambda: enc.frontend(wav, mask, mask_time_indices=masked)):
        enc.zero_grad()
        out, frame_mask = run()
        ((out * frame_mask[..., None]) @ proj).sum().backward()  # a random direction over the real frames
        grads.append((out.detach(), frame_mask, [m.conv.weight.grad.clone() for m in enc.frontend.feature_extractor.conv_layers]))
    (ref, ref_mask, ref_grads), (out, out_mask, out_grads) = grads
    assert torch.equal(out_mask, ref_mask)
    assert (out - ref).abs().max() < 1e-5
    for g, g_ref in zip(out_grads, ref_grads, strict=True):
        assert (g - g_ref).abs().max() <= 1e-4 * g_ref.abs().max()


def test_frontend_runs_in_bf16_under_autocast_and_stays_close_to_fp32():
    torch.manual_seed(0)
    enc = create_audio_encoder("mert-tiny").eval()
    wav, mask = ragged_batch()
    dtypes = []
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))  # conv -> norm -> GELU, per layer
             for m in enc.frontend.feature_extractor.conv_layers]
    with torch.no_grad():
        ref, frame_mask = enc.frontend(wav, mask)
        dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = enc.frontend(wav, mask)
    for h in hooks:
        h.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes), dtypes  # no fp32 fallback inside the stack
    err = (out.float() - ref)[frame_mask].abs().max() / ref[frame_mask].abs().max()
    assert err < 0.05

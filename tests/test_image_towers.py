"""Pretrained image towers by published name from a local HF hub cache, offline, each with its own
preprocessing; the fake caches are written in the hub's exact layout (models--org--name/refs/main,
blobs/<sha256>, snapshots/<hash>/<file> -> ../../blobs/<sha256>) with random tiny weights."""

import pytest
import torch
from hub_cache_fixtures import (
    CLIP_MEAN,
    CLIP_STD,
    TIMM_MEAN,
    TIMM_STD,
    open_clip_cache,
    timm_cache,
    write_hub_repo,
)

from modalities.cxr.dual import DualTower, load_dual_tower, save_dual_tower
from modalities.cxr.towers import ImageTower, TextTower

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def gray(n=2, size=64):
    g = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))  # pixels in [0, 1]
    return g, (g - 0.5) / 0.25  # what CXRTransform (mean 0.5, std 0.25) hands the tower


def per_channel(g, mean, std):
    return (g.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", ["test_resnet.r160_in1k", "hf-hub:timm/test_resnet.r160_in1k"])
def test_timm_pretrained_name_loads_from_the_cache_with_its_own_mean_and_std(tmp_path, offline, name):
    ref = timm_cache(tmp_path)
    tower = ImageTower(pretrained=name, cache_dir=str(tmp_path)).eval()
    assert tower.preprocess["mean"] == TIMM_MEAN and tower.preprocess["std"] == TIMM_STD
    assert tower.preprocess["image_size"] == 64 and tower.transform().size == 64
    assert set(tower.meta["dropped"]) == {"fc.weight", "fc.bias"}
    g, normalised = gray()
    ref.reset_classifier(0)
    with torch.no_grad():
        assert (tower(normalised) - ref(per_channel(g, TIMM_MEAN, TIMM_STD))).abs().max() < 1e-5
    # timm's own hub loader reads the same cache: the layout is the hub's
    theirs = timm.create_model(name, pretrained=True, num_classes=0, cache_dir=str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.allclose(theirs(per_channel(g, TIMM_MEAN, TIMM_STD)), tower(normalised), atol=1e-5)


def test_open_clip_hf_hub_name_loads_the_visual_tower_with_its_preprocess_cfg(tmp_path, offline):
    ref = open_clip_cache(tmp_path)
    tower = ImageTower(pretrained="hf-hub:org/tiny-clip", source="open_clip", cache_dir=str(tmp_path)).eval()
    assert tower.preprocess["mean"] == CLIP_MEAN and tower.preprocess["image_size"] == 32
    assert "logit_scale" in tower.meta["dropped"] and tower.output_dim == 16
    g, normalised = gray(size=32)
    with torch.no_grad():
        assert (tower(normalised) - ref.encode_image(per_channel(g, CLIP_MEAN, CLIP_STD))).abs().max() < 1e-5
        theirs = open_clip.create_model("hf-hub:org/tiny-clip", cache_dir=str(tmp_path)).eval()
        assert torch.allclose(theirs.encode_image(per_channel(g, CLIP_MEAN, CLIP_STD)), tower(normalised), atol=1e-5)


def test_a_saved_dual_tower_with_a_pretrained_image_tower_rebuilds_without_the_cache(tmp_path, offline):
    import modalities

    open_clip_cache(tmp_path / "hub")
    text = TextTower(modalities.create_encoder("bert-tiny"))
    dual = DualTower(ImageTower(pretrained="hf-hub:org/tiny-clip", source="open_clip", cache_dir=str(tmp_path / "hub")),
                     text, embed_dim=8).eval()
    modalities.save_encoder(text.encoder, tmp_path / "enc")
    save_dual_tower(dual, tmp_path / "enc")
    import shutil

    shutil.rmtree(tmp_path / "hub")  # the export carries the weights and the preprocessing itself
    back = load_dual_tower(tmp_path / "enc")
    _, normalised = gray(size=32)
    with torch.no_grad():
        assert torch.allclose(back.encode_image(normalised), dual.encode_image(normalised), atol=1e-6)
    assert back.image_tower.preprocess["std"] == CLIP_STD


def test_a_name_missing_from_the_cache_says_what_to_download(tmp_path, offline):
    with pytest.raises(FileNotFoundError, match=r"'resnet18\.a1_in1k'.*hf download timm/resnet18\.a1_in1k"):
        ImageTower(pretrained="resnet18.a1_in1k", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no pretrained weights named 'resnet18.nope'"):
        ImageTower(pretrained="resnet18.nope", cache_dir=str(tmp_path))
    write_hub_repo(tmp_path, "org/broken", {"open_clip_config.json": b"{not json"})
    with pytest.raises(ValueError, match="open_clip_config.json is not valid JSON"):
        ImageTower(pretrained="hf-hub:org/broken", source="open_clip", cache_dir=str(tmp_path))


# --- LLM2CLIP's released checkpoint (EVA-CLIP format): EVA02 vision tower, text adaptor, projections
TINY_EVA = {"embed_dim": 16, "vision_cfg": {"image_size": 28, "layers": 2, "width": 32, "head_width": 16,
                                             "mlp_ratio": 2.6667, "patch_size": 14, "eva_model_name": "eva-clip-l-14-336",
                                             "xattn": True, "fusedLN": True, "rope": True, "pt_hw_seq_len": 1,
                                             "intp_freq": True, "naiveswiglu": True, "subln": True}}
TIMM_TO_EVA = [("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."), ("mlp.norm.", "mlp.ffn_ln."),
               ("mlp.fc2.", "mlp.w3."), ("attn.norm.", "attn.inner_attn_ln.")]


def llm2clip_checkpoint(path, d_txt: int):
    """An LLM2CLIP checkpoint as eva_clip's CustomCLIP saves it: visual.* in EVAVisionTransformer's names
    (with its RoPE buffers), text.text_adaptor.* (4 LinearBlocks, LayerNorm, Linear), logit_scale."""
    from modalities.cxr.llm2clip import timm_kwargs

    name, kwargs = timm_kwargs(TINY_EVA["vision_cfg"])
    torch.manual_seed(0)
    eva = timm.create_model(name, num_classes=TINY_EVA["embed_dim"], **kwargs).eval()
    with torch.no_grad():
        for p_name, p in eva.named_parameters():  # norms away from their init so that a misplaced one shows
            if "norm" in p_name:
                p.add_(0.05 * torch.randn_like(p))
    state = {}
    for k, v in eva.state_dict().items():
        for a, b in TIMM_TO_EVA:
            k = k.replace(a, b)
        state[f"visual.{k}"] = v
    state["visual.rope.freqs_cos"] = state["visual.rope.freqs_sin"] = torch.ones(4, 8)
    state["visual.blocks.0.attn.rope.freqs_cos"] = torch.ones(4, 8)  # each Attention holds the shared RoPE module
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        p = f"text.text_adaptor.{i}."
        state |= {p + "ln.weight": 1 + 0.1 * torch.randn(d_txt, generator=g), p + "ln.bias": 0.1 * torch.randn(d_txt, generator=g),
                  p + "fn.0.weight": 0.1 * torch.randn(2 * d_txt, d_txt, generator=g), p + "fn.0.bias": 0.1 * torch.randn(2 * d_txt, generator=g),
                  p + "fn.3.weight": 0.1 * torch.randn(d_txt, 2 * d_txt, generator=g), p + "fn.3.bias": 0.1 * torch.randn(d_txt, generator=g)}
    state |= {"text.text_adaptor.4.weight": 1 + 0.1 * torch.randn(d_txt, generator=g),
              "text.text_adaptor.4.bias": 0.1 * torch.randn(d_txt, generator=g),
              "text.text_adaptor.5.weight": 0.1 * torch.randn(16, d_txt, generator=g),
              "text.text_adaptor.5.bias": 0.1 * torch.randn(16, generator=g), "logit_scale": torch.tensor(4.2)}
    torch.save(state, path)
    return state


def text_proj_reference(state: dict, f: torch.Tensor) -> torch.Tensor:
    """eva_clip's TextProj, from its formulas: the features L2-normalised (TextProj.forward's l2_norm=True),
    4 x (x + fn(ln(x))), LayerNorm, Linear; then L2-normalised."""
    import torch.nn.functional as F

    def p(name):
        return state["text.text_adaptor." + name]

    x = F.normalize(f, dim=-1)
    for i in range(4):
        h = F.layer_norm(x, x.shape[-1:], p(f"{i}.ln.weight"), p(f"{i}.ln.bias"))
        x = x + F.linear(F.gelu(F.linear(h, p(f"{i}.fn.0.weight"), p(f"{i}.fn.0.bias"))), p(f"{i}.fn.3.weight"), p(f"{i}.fn.3.bias"))
    x = F.layer_norm(x, x.shape[-1:], p("4.weight"), p("4.bias"))
    return F.normalize(F.linear(x, p("5.weight"), p("5.bias")), dim=-1)


def test_llm2clip_checkpoint_imports_its_eva_tower_adapter_and_projections(tmp_path):
    from timm.models.eva import checkpoint_filter_fn

    import modalities
    from modalities.cxr.llm2clip import load_llm2clip, timm_kwargs

    text = TextTower(modalities.create_encoder("bert-tiny"))
    state = llm2clip_checkpoint(tmp_path / "llm2clip.pt", d_txt=text.output_dim)
    dual = load_llm2clip(tmp_path / "llm2clip.pt", text, TINY_EVA)
    assert dual.meta["adapter_layers"] == 4 and "visual.rope.freqs_cos" in dual.meta["dropped"]
    assert float(dual.logit_scale.detach()) == pytest.approx(4.2)
    # the vision side against timm's own EVA-CLIP conversion of the same checkpoint
    name, kwargs = timm_kwargs(TINY_EVA["vision_cfg"])
    ref = timm.create_model(name, num_classes=16, **kwargs).eval()
    ref.load_state_dict(checkpoint_filter_fn(state, ref), strict=True)
    g = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    rgb = (g.expand(-1, 3, -1, -1) - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    f = 3 * torch.randn(3, text.output_dim, generator=torch.Generator().manual_seed(3))  # not unit length
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(ref(rgb), dim=-1)
        assert (dual.encode_image((g - 0.5) / 0.25) - theirs).abs().max() < 1e-5
        assert (dual.encode_text(features=f) - text_proj_reference(state, f)).abs().max() < 1e-5
    # saved as a CLIPSystem run saves it, rebuilt without the checkpoint
    modalities.save_encoder(text.encoder, tmp_path / "enc", meta={"pooling": "mean"})
    save_dual_tower(dual, tmp_path / "enc")
    back = load_dual_tower(tmp_path / "enc")
    with torch.no_grad():
        assert torch.allclose(back.encode_image((g - 0.5) / 0.25), theirs, atol=1e-5)
        assert torch.allclose(back.encode_text(features=f), dual.encode_text(features=f), atol=1e-6)


def test_a_llm2clip_checkpoint_that_does_not_fit_says_why(tmp_path):
    import modalities
    from modalities.cxr.llm2clip import load_llm2clip

    text = TextTower(modalities.create_encoder("bert-tiny"))
    state = llm2clip_checkpoint(tmp_path / "ok.pt", d_txt=text.output_dim)
    narrow = TextTower(modalities.create_encoder("bert-tiny", hidden_size=64))
    with pytest.raises(ValueError, match="takes 128-wide features, the text tower gives 64"):
        load_llm2clip(tmp_path / "ok.pt", narrow, TINY_EVA)
    torch.save({**state, "visual.blocks.0.attn.relative_position_bias_table": torch.zeros(3)}, tmp_path / "rel.pt")
    with pytest.raises(KeyError, match="relative_position_bias_table"):
        load_llm2clip(tmp_path / "rel.pt", text, TINY_EVA)
    with pytest.raises(ValueError, match="eva_model_name 'eva-clip-g-14'"):
        load_llm2clip(tmp_path / "ok.pt", text, {**TINY_EVA, "vision_cfg": {**TINY_EVA["vision_cfg"], "eva_model_name": "eva-clip-g-14"}})
    torch.save({k: v for k, v in state.items() if k.startswith("visual.")}, tmp_path / "visual_only.pt")
    with pytest.raises(ValueError, match="it is not an LLM2CLIP"):
        load_llm2clip(tmp_path / "visual_only.pt", text, TINY_EVA)


def test_llm2clip4cxr_checkpoint_loads_its_projection_and_names_the_lora_deltas_it_leaves(tmp_path):
    import torch.nn.functional as F

    import modalities
    from modalities.cxr.llm2clip import load_llm2clip

    text = TextTower(modalities.create_encoder("bert-tiny"))
    d = text.output_dim
    state = {k: v for k, v in llm2clip_checkpoint(tmp_path / "x.pt", d_txt=d).items() if not k.startswith("text.")}
    g = torch.Generator().manual_seed(4)
    state |= {"text.projection.0.weight": 1 + 0.1 * torch.randn(d, generator=g), "text.projection.0.bias": 0.1 * torch.randn(d, generator=g),
              "text.projection.1.weight": 0.1 * torch.randn(16, d, generator=g), "text.projection.1.bias": 0.1 * torch.randn(16, generator=g),
              "text.model.layers.0.self_attn.q_proj.lora_A.llm2clip.weight": torch.zeros(2, 8),
              "text.model.layers.0.self_attn.q_proj.base_layer.weight": torch.zeros(8, 8)}
    torch.save(state, tmp_path / "llm2clip4cxr.bin")
    dual = load_llm2clip(tmp_path / "llm2clip4cxr.bin", text, TINY_EVA)
    assert dual.meta["layout"] == "llm2clip4cxr" and dual.meta["adapter_layers"] == 0
    assert dual.meta["text_lora_not_applied"] == 1 and "not applied" in " ".join(dual.meta["dropped"].values())
    f = torch.randn(3, d, generator=g)
    ref = F.linear(F.layer_norm(f, (d,), state["text.projection.0.weight"], state["text.projection.0.bias"]),
                   state["text.projection.1.weight"], state["text.projection.1.bias"])
    with torch.no_grad():
        assert (dual.encode_text(features=f) - F.normalize(ref, dim=-1)).abs().max() < 1e-5

"""LLM2CLIP's Hugging Face releases (microsoft/LLM2CLIP-Openai-*: remote-code folder, model_type "clip",
architectures LLM2CLIPModel) import through `tessera import` with parity to transformers' CLIPVisionModel and
to the adapter's formulas (eva_clip TextProj), re-derived here; a folder that is not one says what it expected."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

import modalities
from tasks.cli import main as tessera

D_TXT, PROJ = 128, 16  # bert-tiny's width stands in for the LLM2Vec features (4096 in the release)
VISION = {"dropout": 0.0, "hidden_size": 32, "intermediate_size": 64, "model_type": "clip_vision_model",
          "num_attention_heads": 2, "num_hidden_layers": 2, "patch_size": 14, "image_size": 28, "projection_dim": PROJ}
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def write_llm2clip_folder(folder, drop_adapter: bool = False):
    """The release's layout: config.json as on the hub (LLM2CLIP-Openai-L-14-224, sizes shrunk), model.safetensors
    with vision_model.* (transformers' CLIPVisionTransformer), visual_projection.weight, text_adapter.adaptor.* and
    logit_scale. Returns (state, reference CLIPVisionModel)."""
    torch.manual_seed(0)
    ref = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in VISION.items() if k != "model_type"})).eval()
    with torch.no_grad():  # norms away from their init so that a misplaced one shows
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    state = {f"vision_model.{k}": v for k, v in getattr(ref, "vision_model", ref).state_dict().items()}
    g = torch.Generator().manual_seed(1)
    state["visual_projection.weight"] = 0.1 * torch.randn(PROJ, VISION["hidden_size"], generator=g)
    if not drop_adapter:
        for i in range(4):
            p = f"text_adapter.adaptor.{i}."
            state |= {p + "ln.weight": 1 + 0.1 * torch.randn(D_TXT, generator=g), p + "ln.bias": 0.1 * torch.randn(D_TXT, generator=g),
                      p + "fn.0.weight": 0.1 * torch.randn(2 * D_TXT, D_TXT, generator=g),
                      p + "fn.0.bias": 0.1 * torch.randn(2 * D_TXT, generator=g),
                      p + "fn.3.weight": 0.1 * torch.randn(D_TXT, 2 * D_TXT, generator=g),
                      p + "fn.3.bias": 0.1 * torch.randn(D_TXT, generator=g)}
        state |= {"text_adapter.adaptor.4.weight": 1 + 0.1 * torch.randn(D_TXT, generator=g),
                  "text_adapter.adaptor.4.bias": 0.1 * torch.randn(D_TXT, generator=g),
                  "text_adapter.adaptor.5.weight": 0.1 * torch.randn(PROJ, D_TXT, generator=g),
                  "text_adapter.adaptor.5.bias": 0.1 * torch.randn(PROJ, generator=g)}
    state["logit_scale"] = torch.tensor(3.1)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "_name_or_path": "LLM2CLIP-Openai-L-14", "architectures": ["LLM2CLIPModel"],
        "auto_map": {"AutoConfig": "configuration_clip.CLIPConfig", "AutoModel": "modeling_clip.LLM2CLIPModel"},
        "initializer_factor": 1.0, "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": PROJ,
        "text_config": {"model_type": "clip_text_model"}, "torch_dtype": "float32", "transformers_version": "4.40.2",
        "vision_config": VISION}, indent=2))
    return state, ref


def text_proj_reference(state, f):
    """TextProj (microsoft/LLM2CLIP eva_clip/model.py): L2-normalise, 4 x (x + fn(ln(x))), LayerNorm, Linear."""
    def p(name):
        return state["text_adapter.adaptor." + name]

    x = F.normalize(f, dim=-1)
    for i in range(4):
        h = F.layer_norm(x, x.shape[-1:], p(f"{i}.ln.weight"), p(f"{i}.ln.bias"))
        x = x + F.linear(F.gelu(F.linear(h, p(f"{i}.fn.0.weight"), p(f"{i}.fn.0.bias"))), p(f"{i}.fn.3.weight"), p(f"{i}.fn.3.bias"))
    return F.linear(F.layer_norm(x, x.shape[-1:], p("4.weight"), p("4.bias")), p("5.weight"), p("5.bias"))


def test_llm2clip_hf_folder_imports_with_parity_to_clip_vision_model_and_the_adapter(tmp_path, capsys):
    from modalities.cxr.towers import TextTower

    state, ref = write_llm2clip_folder(tmp_path / "hf")
    assert tessera(["import", str(tmp_path / "hf"), str(tmp_path / "ours"), "--check", "--atol", "1e-5"]) == 0
    assert "parity with the reference implementation" in capsys.readouterr().out
    enc = modalities.load_encoder(tmp_path / "ours")
    assert enc.meta["layout"] == "llm2clip-hf" and enc.meta["adapter_layers"] == 4
    assert float(enc.logit_scale.detach()) == pytest.approx(3.1)
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 28, 28, generator=g)
    gray = torch.rand(2, 1, 28, 28, generator=g)
    f = 3 * torch.randn(3, D_TXT, generator=g)  # not unit length: the adapter's L2 normalisation must show
    with torch.no_grad():
        theirs = ref(pixel_values=pixels).pooler_output @ state["visual_projection.weight"].T
        assert (enc.image_features(pixels) - theirs).abs().max() < 1e-5
        assert (enc.text_features(f) - text_proj_reference(state, f)).abs().max() < 1e-5
        # the CXR pipeline's grayscale input, turned into OpenAI CLIP's normalised RGB by the tower itself
        rgb = (gray.expand(-1, 3, -1, -1) - OPENAI_MEAN) / OPENAI_STD
        want = F.normalize(ref(pixel_values=rgb).pooler_output @ state["visual_projection.weight"].T, dim=-1)
        assert (enc.encode_image((gray - 0.5) / 0.25) - want).abs().max() < 1e-5
        # paired with a text tower: a DualTower with the same image and text maps
        text = TextTower(modalities.create_encoder("bert-tiny")).eval()
        dual = enc.dual_tower(text)
        assert (dual.encode_image((gray - 0.5) / 0.25) - want).abs().max() < 1e-6
        assert (dual.encode_text(features=f) - F.normalize(text_proj_reference(state, f), dim=-1)).abs().max() < 1e-5


def test_import_check_sees_a_wrong_llm2clip_conversion(tmp_path):
    from modalities.hub import check_parity

    write_llm2clip_folder(tmp_path)
    enc = modalities.load_encoder(tmp_path)
    assert check_parity(tmp_path, enc) < 1e-5
    with torch.no_grad():  # what a q/k swap in the fused projection would do to the first rows
        qkv = enc.image_tower.model.blocks[0].attn.qkv.weight
        qkv[:32], qkv[32:64] = qkv[32:64].clone(), qkv[:32].clone()
    assert check_parity(tmp_path, enc) > 1e-4


def test_a_folder_that_is_not_llm2clip_says_what_it_expected(tmp_path, capsys):
    write_llm2clip_folder(tmp_path / "plain")
    cfg = json.loads((tmp_path / "plain" / "config.json").read_text())
    cfg.pop("auto_map")
    cfg["architectures"] = ["CLIPModel"]
    (tmp_path / "plain" / "config.json").write_text(json.dumps(cfg))
    write_llm2clip_folder(tmp_path / "no_adapter", drop_adapter=True)
    for name, expect in (("plain", "is not LLM2CLIP; expected an LLM2CLIP folder"),
                         ("no_adapter", "text_adapter.adaptor")):
        assert tessera(["import", str(tmp_path / name), str(tmp_path / f"{name}_out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(tmp_path / name) in err[0] and expect in err[0], err
        assert "EVA-CLIP" in err[0] and "Traceback" not in err[0]

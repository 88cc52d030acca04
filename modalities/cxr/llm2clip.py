"""LLM2CLIP's image side from its released PyTorch checkpoint: the EVA02 vision tower, the text
adapter and the text projection, as a ``DualTower`` around a text tower you bring (the LLM2Vec
encoder, imported by ``modalities.cxr.llm2vec``). LLM2CLIP4CXR's checkpoint (lukeingawesome/llm2clip4cxr
``retrieval.py``: ``visual.*``, ``text.projection`` = LayerNorm + Linear, ``logit_scale``, and the text
tower's LoRA deltas under ``text.model.*``) loads too; the LoRA deltas are named in ``meta`` as not applied.

Layout read from upstream microsoft/LLM2CLIP ``llm2clip/eva_clip/``: ``model.py`` (``CustomCLIP``:
``visual`` = ``EVAVisionTransformer``, ``text`` = ``TextProj``, ``logit_scale``; ``TextProj.text_adaptor``
= N x ``LinearBlock`` (x + fn(ln(x)), fn = Linear(d, 2d), GELU, Dropout, Linear(2d, d)) on the L2-normalised
features (``TextProj.forward``: l2_norm=True), then LayerNorm(d), then Linear(d, embed_dim)
with bias), ``eva_vit_model.py`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.i.{norm1, attn.{q,k,v}_proj, attn.inner_attn_ln, attn.proj,
norm2, mlp.{w1, w2, ffn_ln, w3}}``, ``norm``, ``head`` = Linear(width, embed_dim); RoPE tables as
buffers ``rope.freqs_cos/sin``) and ``model_configs/EVA02-CLIP-L-14-336.json`` (``embed_dim``,
``vision_cfg``). The EVA tower is built as timm's ``Eva`` (its ``eva02_*_clip_*`` models are EVA02-CLIP's
vision towers), the rename table below maps EVA's names onto timm's, and EVA's ``head`` becomes the
dual tower's image projection (with its bias).

    dual = load_llm2clip("LLM2CLIP-EVA02-L-14-336.pt", text_tower=load_text_tower("runs/llm2vec"),
                         config="EVA02-CLIP-L-14-336.json")       # config: the repo's model_configs file
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from torch import nn

from ..importing import KeyMap
from .hf_cache import OPENAI_MEAN, OPENAI_STD, read_weights

# EVA-CLIP eva_model_name -> timm architecture (timm's eva02 CLIP towers)
EVA_TO_TIMM = {"eva-clip-l-14-336": "eva02_large_patch14_clip_336", "eva-clip-l-14": "eva02_large_patch14_clip_224",
               "eva-clip-b-16": "eva02_base_patch16_clip_224"}

_B = r"blocks\.(\d+)\."
VISION = KeyMap(
    renames=[
        (r"(cls_token|pos_embed)", "{0}"),
        (r"patch_embed\.proj\.(weight|bias)", "patch_embed.proj.{0}"),
        (_B + r"(norm1|norm2)\.(weight|bias)", "blocks.{0}.{1}.{2}"),
        (_B + r"attn\.(q_proj|k_proj|v_proj|proj)\.(weight|bias)", "blocks.{0}.attn.{1}.{2}"),
        (_B + r"attn\.inner_attn_ln\.(weight|bias)", "blocks.{0}.attn.norm.{1}"),  # subln
        (_B + r"mlp\.w1\.(weight|bias)", "blocks.{0}.mlp.fc1_g.{1}"),  # SwiGLU: act(w1 x) * (w2 x)
        (_B + r"mlp\.w2\.(weight|bias)", "blocks.{0}.mlp.fc1_x.{1}"),
        (_B + r"mlp\.ffn_ln\.(weight|bias)", "blocks.{0}.mlp.norm.{1}"),
        (_B + r"mlp\.w3\.(weight|bias)", "blocks.{0}.mlp.fc2.{1}"),
        (r"norm\.(weight|bias)", "norm.{0}"),
    ],
    dropped={r"(^|\.)rope\.freqs_(cos|sin)$": "RoPE cos/sin tables: buffers timm recomputes from the config",
             r"^head\.": "EVA's head: loaded as the dual tower's image projection"},
)
# TextProj's LinearBlock parts -> TextAdapter's Sequential(LayerNorm, Linear, GELU, Linear) indices
_BLOCK_PARTS = {"ln": 0, "fn.0": 1, "fn.3": 3}
# LLM2CLIP4CXR (lukeingawesome/llm2clip4cxr retrieval.py: text.projection = Sequential(LayerNorm, Linear)) ->
# TextProj's names for the same two modules after zero adaptor blocks
_CXR_TEXT = {f"text.projection.{i}.{kind}": f"text.text_adaptor.{i}.{kind}" for i in (0, 1) for kind in ("weight", "bias")}
_ADAPTOR = re.compile(r"text\.text_adaptor\.(\d+)\.(ln|fn\.0|fn\.3|weight|bias)\.?(weight|bias)?")


def timm_kwargs(vision_cfg: dict) -> tuple[str, dict]:
    """(timm architecture, create_model overrides) for an EVA-CLIP ``vision_cfg``; options timm's Eva
    cannot reproduce are refused by name."""
    name = EVA_TO_TIMM.get(vision_cfg.get("eva_model_name", ""))
    if name is None:
        raise ValueError(f"LLM2CLIP vision_cfg names eva_model_name {vision_cfg.get('eva_model_name')!r}; importable: "
                         f"{sorted(EVA_TO_TIMM)}")
    for key in ("postnorm", "global_average_pool"):
        if vision_cfg.get(key):
            raise ValueError(f"LLM2CLIP vision_cfg sets {key}; only EVA02-CLIP's cls-token, pre-norm towers import")
    if vision_cfg.get("ls_init_value"):
        raise ValueError("LLM2CLIP vision_cfg sets ls_init_value (layer scale); not mapped onto timm's Eva here")
    width, patch, size = vision_cfg["width"], vision_cfg["patch_size"], vision_cfg["image_size"]
    rope, seq = bool(vision_cfg.get("rope")), vision_cfg.get("pt_hw_seq_len", 16)
    if rope and not vision_cfg.get("intp_freq") and size // patch != seq:
        raise ValueError("LLM2CLIP vision_cfg: RoPE without intp_freq on a grid other than pt_hw_seq_len is not reproduced")
    subln = bool(vision_cfg.get("subln"))
    return name, {
        "img_size": size, "patch_size": patch, "embed_dim": width, "depth": vision_cfg["layers"],
        "num_heads": width // vision_cfg.get("head_width", 64), "mlp_ratio": vision_cfg.get("mlp_ratio", 4.0),
        "qkv_bias": bool(vision_cfg.get("qkv_bias", True)), "qkv_fused": not subln,
        "swiglu_mlp": bool(vision_cfg.get("naiveswiglu")), "scale_mlp": subln, "scale_attn_inner": subln,
        "use_rot_pos_emb": rope, "ref_feat_shape": (seq, seq) if rope else None,
    }


def load_llm2clip(checkpoint: str | Path, text_tower: nn.Module, config: str | Path | dict):
    """A ``DualTower`` from an LLM2CLIP (EVA-CLIP format) checkpoint: timm Eva image tower (with its
    OpenAI-CLIP preprocessing), EVA's head as the image projection, the text adaptor's blocks as the
    adapter, its LayerNorm + biased Linear as the text projection, the logit scale. Every key is mapped
    or dropped with a reason (``dual.meta["dropped"]``); the text tower is frozen, as LLM2CLIP trains it."""
    from .dual import DualTower
    from .towers import ImageTower

    cfg = config if isinstance(config, dict) else json.loads(Path(config).read_text())
    if "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ValueError(f"{config} is not an EVA-CLIP model config (needs embed_dim and vision_cfg)")
    raw = read_weights(Path(checkpoint))
    visual = {k[len("visual."):]: v for k, v in raw.items() if k.startswith("visual.")}
    others = {k: v for k, v in raw.items() if not k.startswith("visual.")}
    cxr = "text.projection.1.weight" in others  # LLM2CLIP4CXR: no adaptor blocks, projection = LayerNorm + Linear
    if not visual or not (cxr or any(_ADAPTOR.fullmatch(k) for k in others)):
        raise ValueError(f"{checkpoint} lacks visual.* or text.text_adaptor.* / text.projection.* keys; it is not an "
                         "LLM2CLIP (or LLM2CLIP4CXR) checkpoint")
    name, kwargs = timm_kwargs(cfg["vision_cfg"])
    preprocess = {"image_size": kwargs["img_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                  "interpolation": "bicubic", "crop_pct": 1.0, "classifier": "head"}
    tower = ImageTower(name, "timm", image_size=kwargs["img_size"], preprocess=preprocess, **kwargs)
    tower.model.load_state_dict(VISION.convert(visual), strict=True)

    if cxr:
        others = {_CXR_TEXT.get(k, k): v for k, v in others.items()}  # the same modules under TextProj's names
        blocks, d_txt = [], others["text.text_adaptor.0.weight"].shape[0]
    else:
        blocks = sorted({int(m.group(1)) for k in others if (m := _ADAPTOR.fullmatch(k)) and m.group(2) == "ln"})
        d_txt = others["text.text_adaptor.0.ln.weight"].shape[0]
        expansion = others["text.text_adaptor.0.fn.0.weight"].shape[0] / d_txt
        if expansion != 2:
            raise ValueError(f"{checkpoint}: the text adaptor widens by {expansion:g}; the adapter here widens by 2")
    width = getattr(text_tower, "output_dim", None) or text_tower.hidden_size
    if width != d_txt:
        raise ValueError(f"{checkpoint}: the text adaptor takes {d_txt}-wide features, the text tower gives {width}; "
                         "pair the checkpoint with the LLM2Vec model it was trained with")
    embed_dim = int(cfg["embed_dim"])
    scale = float(others["logit_scale"]) if "logit_scale" in others else math.log(1 / 0.07)
    dual = DualTower(tower, text_tower, embed_dim=embed_dim, freeze_text=True, adapter_layers=len(blocks),
                     init_logit_scale=scale, text_proj_norm=True, proj_bias=True,
                     text_input_l2=not cxr)  # TextProj L2-normalises the LLM2Vec features; LLM2CLIP4CXR's projection does not
    state = {f"image_tower.model.{k}": v for k, v in tower.model.state_dict().items()}
    state.update({f"text_tower.{k}": v for k, v in text_tower.state_dict().items()})
    state["image_proj.weight"], state["image_proj.bias"] = visual["head.weight"], visual["head.bias"]
    n = len(blocks)
    unknown, text_dropped = [], {}
    for k, v in others.items():
        if k.startswith(("text.model.", "text.core.")):  # LLM2CLIP4CXR keeps the text tower's state here too
            text_dropped[k] = ("a LoRA delta of the LLM2Vec text tower (CLIP-stage fine-tuning): not applied here; "
                               "merge it with llm2vec_release.merge_lora_deltas(text_tower, state, adapter_config=...)" if "lora_" in k else
                               "the text tower's own weight: the text tower comes from its LLM2Vec folder")
        elif k == "logit_scale":
            state["logit_scale"] = v.reshape(())
        elif m := _ADAPTOR.fullmatch(k):
            i, part, kind = int(m.group(1)), m.group(2), m.group(3)
            if i < n:  # LinearBlock i: ln -> blocks.i.0, fn.0 -> .1, fn.3 -> .3
                state[f"text_adapter.blocks.{i}.{_BLOCK_PARTS[part]}.{kind}"] = v
            elif i == n:  # the LayerNorm after the blocks
                state[f"text_norm.{part}"] = v
            elif i == n + 1:  # the projection
                state[f"text_proj.{part}"] = v
            else:
                unknown.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise KeyError(f"{len(unknown)} LLM2CLIP checkpoint keys are neither mapped nor dropped: {sorted(unknown)[:10]}")
    dual.load_state_dict(state, strict=True)
    dual.meta = {"source": str(checkpoint), "layout": "llm2clip4cxr" if cxr else "llm2clip", "image_tower": name,
                 "adapter_layers": n, "dropped": {**{f"visual.{k}": why for k, why in VISION.dropped_keys(visual).items()
                                                      if "head" not in k}, **text_dropped}}
    if any("lora_" in k for k in text_dropped):
        dual.meta["text_lora_not_applied"] = sum("lora_" in k for k in text_dropped)
    return dual.eval()

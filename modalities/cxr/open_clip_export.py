"""A dual tower -> an open_clip folder: ``tessera export ENCODER OUT --format open_clip``, loaded by
``open_clip.create_model("local-dir:OUT")`` (or ``create_model_and_transforms``).

The folder is what open_clip's ``local-dir:`` schema reads (open_clip ``factory.py``):
``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``), ``open_clip_model.safetensors`` (a
``CustomTextCLIP`` state dict: ``visual.*``, ``text.*``, ``logit_scale`` [, ``logit_bias``]) and,
for the text tower, an HF BERT/RoBERTa ``config.json`` + tokenizer files beside them, which
``text_cfg.hf_model_name`` names (the folder's absolute path: move the folder, edit that line).

What maps, and how (read from open_clip's ``timm_model.py``, ``hf_model.py``, ``transformer.py``):
- a timm image tower -> ``vision_cfg.timm_model_name`` (``TimmModel``: ``trunk`` = the timm model,
  ``head.proj`` = our image projection, no bias); a one-channel stem becomes a three-channel one
  with each weight divided by 3, so a grey image repeated over RGB gives the same features;
- an open_clip image tower -> its own ``vision_cfg`` with our image projection folded into its
  last projection (ViT ``proj``, timm ``head.proj``, ModifiedResNet ``attnpool.c_proj``);
- the text tower (BERT-shaped, mean or cls pooling) -> ``HFTextEncoder`` (``mean_pooler`` /
  ``cls_last_hidden_state_pooler``) with ``hf_proj_type: linear`` = our text projection; LLM2CLIP's
  residual adapter has no open_clip counterpart, so a dual tower with one is refused;
- ``preprocess_cfg``: the normalisation our pipeline + tower apply, per RGB channel: a pretrained
  tower's own mean/std, else the pipeline's grey mean/std repeated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import Tensor, nn

from ..exporting import register_exporter

OPEN_CLIP_POOLERS = {"mean": "mean_pooler", "cls": "cls_last_hidden_state_pooler"}


def _text_side(dual, folder: Path) -> tuple[dict, dict[str, Tensor], dict]:
    """(text_cfg, text.* state, HF config) of the dual tower's text side."""
    from ..backbone.hf_bert import to_hf

    if not isinstance(dual.text_adapter, nn.Identity) or not isinstance(dual.text_norm, nn.Identity):
        raise ValueError(f"{folder}: the dual tower has a text adapter (LLM2CLIP's residual MLP), which open_clip's "
                         "text encoder cannot hold; train with adapter_layers: 0 to export to open_clip")
    tower = dual.text_tower
    encoder, pooling = getattr(tower, "encoder", None), getattr(tower, "pooling", None)
    if type(encoder).__name__ != "TokenEncoder" or pooling not in OPEN_CLIP_POOLERS:
        raise ValueError(f"{folder}: open_clip's HF text encoder takes a BERT/RoBERTa tower pooled by "
                         f"{sorted(OPEN_CLIP_POOLERS)}; this text tower is a {type(tower).__name__} pooled by {pooling!r}")
    hf, state = to_hf(encoder)  # refuses encoders BertModel cannot express
    text_cfg = {"hf_model_name": "", "hf_tokenizer_name": "", "hf_proj_type": "linear",
                "hf_pooler_type": OPEN_CLIP_POOLERS[pooling], "hf_model_pretrained": False,
                "context_length": encoder.config.max_position_embeddings - encoder.config.position_offset}
    out = {f"text.transformer.{k}": v for k, v in state.items()}
    if dual.text_proj.bias is not None:
        raise ValueError(f"{folder}: the text projection has a bias; open_clip's linear text projection has none")
    out["text.proj.weight"] = dual.text_proj.weight.detach().clone()
    return text_cfg, out, hf


def _timm_vision(tower, proj: Tensor) -> tuple[dict, dict[str, Tensor]]:
    model = tower.model
    state = {f"visual.trunk.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    if tower.in_chans == 1:  # (C, 1, k, k) -> (C, 3, k, k) / 3: the same features for grey repeated over RGB
        first = model.pretrained_cfg.get("first_conv")
        first = first[0] if isinstance(first, (list, tuple)) else first
        key = f"visual.trunk.{first}.weight"
        if key not in state or state[key].shape[1] != 1:
            raise ValueError(f"timm model {tower.name}: its first conv {first!r} is not the one-channel stem")
        state[key] = state[key].expand(-1, 3, -1, -1) / 3
    pool = getattr(model, "global_pool", "avg")
    pool = getattr(pool, "pool_type", pool)
    state["visual.head.proj.weight"] = proj.detach().clone()
    return {"timm_model_name": tower.name, "timm_model_pretrained": False, "timm_pool": pool or "",
            "timm_proj": "linear", "timm_proj_bias": False, "image_size": tower.spec["image_size"]}, state


def _open_clip_vision(tower, proj: Tensor) -> tuple[dict, dict[str, Tensor]]:
    """The tower's own vision_cfg; our projection W (E, D) folded into its last one (D outputs)."""
    vision_cfg = dict((tower.spec.get("open_clip_cfg") or {}).get("vision_cfg") or {})
    if not vision_cfg:
        import open_clip

        vision_cfg = dict(open_clip.get_model_config(tower.name)["vision_cfg"])
        vision_cfg["image_size"] = tower.spec["image_size"]
    state = {f"visual.{k}": v.detach().clone() for k, v in tower.model.state_dict().items()}
    W = proj.detach()
    if "visual.proj" in state and state["visual.proj"].dim() == 2:  # ViT: pooled (width) @ proj (width, D)
        state["visual.proj"] = state["visual.proj"] @ W.T  # (width, E)
    elif "visual.head.proj.weight" in state:  # TimmModel: Linear(prev, D)
        state["visual.head.proj.weight"] = W @ state["visual.head.proj.weight"]
        if "visual.head.proj.bias" in state:
            state["visual.head.proj.bias"] = W @ state["visual.head.proj.bias"]
    elif "visual.attnpool.c_proj.weight" in state:  # ModifiedResNet: Linear(embed, D)
        state["visual.attnpool.c_proj.weight"] = W @ state["visual.attnpool.c_proj.weight"]
        state["visual.attnpool.c_proj.bias"] = W @ state["visual.attnpool.c_proj.bias"]
    else:
        raise ValueError(f"open_clip tower {tower.name}: no final projection to fold the image projection into")
    return vision_cfg, state


def _preprocess(tower, folder: Path) -> dict:
    pre = getattr(tower, "preprocess", None)
    if pre is not None:  # a pretrained tower normalises with its own statistics (towers.ImageTower.forward)
        return {"size": tower.spec["image_size"], "mean": list(pre["mean"]), "std": list(pre["std"]),
                "interpolation": pre.get("interpolation", "bicubic"), "resize_mode": "shortest"}
    saved = Path(folder) / "dual_tower" / "preprocess.json"  # what the data module trained with
    raw = json.loads(saved.read_text()) if saved.is_file() else {}
    mean, std = float(raw.get("mean", 0.5)), float(raw.get("std", 0.25))  # CXRTransform's defaults
    return {"size": int(raw.get("image_size", tower.spec["image_size"])), "mean": [mean] * 3, "std": [std] * 3,
            "interpolation": "bilinear", "resize_mode": "shortest"}


@register_exporter("open_clip", help="a dual tower (timm / open_clip image tower + BERT text tower) as an open_clip "
                                     "folder (create_model('local-dir:OUT'))")
def write_open_clip_folder(encoder_folder: Path, out: Path, **options) -> Path:
    from safetensors.torch import save_file

    from .dual import DUAL_DIR, load_dual_tower

    if not (Path(encoder_folder) / DUAL_DIR / "config.json").is_file():
        raise ValueError(f"{encoder_folder} has no {DUAL_DIR}/config.json; --format open_clip exports a dual tower "
                         "(the encoder folder of a CLIPSystem run)")
    dual = load_dual_tower(encoder_folder)
    if dual.image_proj.bias is not None:
        raise ValueError(f"{encoder_folder}: the image projection has a bias (an imported LLM2CLIP head); "
                         "open_clip's vision projections here take none")
    out = Path(out).resolve()
    text_cfg, text_state, hf = _text_side(dual, encoder_folder)
    tower = dual.image_tower
    if tower.source == "timm":
        vision_cfg, vision_state = _timm_vision(tower, dual.image_proj.weight)
    else:
        vision_cfg, vision_state = _open_clip_vision(tower, dual.image_proj.weight)
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(out)
    model_cfg = {"embed_dim": dual.image_proj.out_features, "vision_cfg": vision_cfg, "text_cfg": text_cfg,
                 "custom_text": True}
    state = {**vision_state, **text_state, "logit_scale": dual.logit_scale.detach().clone()}
    if dual.logit_bias is not None:
        model_cfg["init_logit_bias"] = float(dual.logit_bias.detach())
        state["logit_bias"] = dual.logit_bias.detach().clone()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "open_clip_model.safetensors")
    (out / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": _preprocess(tower, encoder_folder)}, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")  # the text tower's, for hf_model_name
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "merges.txt",
                 "vocab.json"):
        if (Path(encoder_folder) / name).is_file():
            shutil.copy2(Path(encoder_folder) / name, out / name)
    return out


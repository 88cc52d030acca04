"""LLM2CLIP's Hugging Face releases (microsoft/LLM2CLIP-Openai-L-14-336, -L-14-224, -B-16) through ``load_encoder``.

Each is a remote-code folder; no remote code runs here. Its ``config.json`` has ``model_type`` "clip",
``architectures`` ["LLM2CLIPModel"], ``auto_map`` {AutoConfig: configuration_clip.CLIPConfig, AutoModel:
modeling_clip.LLM2CLIPModel}, ``projection_dim`` (1280), ``logit_scale_init_value``, ``vision_config`` (transformers'
``CLIPVisionConfig`` fields; unset ones take its defaults) and a stub ``text_config``. Its weights
(``model.safetensors``, or ``pytorch_model.bin`` read with weights_only=True):

    vision_model.*                      transformers' CLIPVisionTransformer (embeddings, pre_layrnorm, encoder.layers.i.
                                        {self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2, layer_norm2}, post_layernorm)
    visual_projection.weight            Linear(width, projection_dim), no bias: get_image_features = it (pooled CLS)
    text_adapter.adaptor.{0..N-1}.{ln, fn.0, fn.3}.*   LinearBlocks: x + fn(ln(x)), fn = Linear(d, 2d), GELU, Linear(2d, d)
    text_adapter.adaptor.N.*            LayerNorm(d)
    text_adapter.adaptor.N+1.*          Linear(d, projection_dim) with bias: get_text_features(LLM2Vec features)
    logit_scale

Read from upstream: the config of microsoft/LLM2CLIP-Openai-L-14-224 (config.json on the HF hub); the remote code's use
in embeddings-benchmark/mteb ``mteb/models/llm2clip_models.py`` (``get_image_features(pixel_values)``,
``get_text_features(l2v.encode(texts))``, openai/clip-vit-* image processors); the adapter's formulas in microsoft/LLM2CLIP
``llm2clip/eva_clip/model.py`` (``LinearBlock``; ``TextProj.forward`` L2-normalises its input first) with the HF
adapter's sizes (4096 wide, 4 blocks, expansion 2, 1280 out, projection bias) as the authors' evaluation code states them.
The vision tower runs as timm's ``VisionTransformer`` with OpenAI CLIP's settings (pre-norm, QuickGELU, class token,
no patch bias); the rename table below maps transformers' names onto timm's, q/k/v fused.

    enc = modalities.load_encoder("LLM2CLIP-Openai-L-14-336")      # or: tessera import FOLDER runs/llm2clip --check
    enc.image_features(pixel_values)        # (B, 1280), transformers' get_image_features
    enc.text_features(llm2vec_features)     # (B, 1280), the adapter on LLM2Vec embeddings
    dual = enc.dual_tower(load_text_tower("runs/llm2vec"))   # a DualTower (CLIPSystem, retrieval) with its text tower
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hub import read_config, register_architecture, register_importer, register_parity
from ..importing import KeyMap
from .dual import TextAdapter
from .hf_cache import OPENAI_MEAN, OPENAI_STD
from .towers import ImageTower

ARCHITECTURES = ("LLM2CLIPModel",)
AUTO_MODEL = "modeling_clip.LLM2CLIPModel"
_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}  # transformers hidden_act -> timm act_layer
# (patch, image size, width) -> the timm name of the same architecture (every size is also passed explicitly)
_TIMM_NAMES = {(14, 336, 1024): "vit_large_patch14_clip_336", (14, 224, 1024): "vit_large_patch14_clip_224",
               (16, 224, 768): "vit_base_patch16_clip_224"}
EXPECTED = ("an LLM2CLIP folder: config.json with model_type 'clip', architectures ['LLM2CLIPModel'] (auto_map AutoModel "
            f"{AUTO_MODEL!r}), weights vision_model.*, visual_projection.weight, text_adapter.adaptor.*; or an EVA-CLIP "
            "LLM2CLIP checkpoint file (LLM2CLIP-EVA02-*.pt: visual.*, text.text_adaptor.*), read by "
            "modalities.cxr.llm2clip.load_llm2clip with its model config")


@dataclass
class LLM2CLIPConfig:
    image_size: int = 336  # input side in pixels (vision_config.image_size)
    patch_size: int = 14  # ViT patch side
    hidden_size: int = 1024  # ViT width
    intermediate_size: int = 4096  # ViT MLP width
    num_layers: int = 24  # ViT blocks
    num_heads: int = 16  # ViT attention heads
    hidden_act: str = "quick_gelu"  # OpenAI CLIP's x * sigmoid(1.702 x)
    projection_dim: int = 1280  # the shared image-text space
    text_dim: int = 4096  # width of the LLM2Vec features the adapter takes
    adapter_layers: int = 4  # residual MLP blocks (LinearBlock) of the adapter
    adapter_expansion: int = 2  # a block's hidden width = expansion x text_dim
    logit_scale: float = 2.6592  # log inverse temperature (config.json's logit_scale_init_value until weights load)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LLM2CLIPConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown LLM2CLIP config fields {sorted(unknown)}")
        return cls(**d)


def image_tower_args(config: LLM2CLIPConfig) -> dict:
    """``ImageTower`` arguments of the CLIP ViT: timm's VisionTransformer with OpenAI CLIP's settings and preprocessing."""
    key = (config.patch_size, config.image_size, config.hidden_size)
    preprocess = {"image_size": config.image_size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                  "interpolation": "bicubic", "crop_pct": 1.0, "classifier": "head"}
    return {"name": _TIMM_NAMES.get(key, "vit_base_patch16_clip_224"), "source": "timm", "image_size": config.image_size,
            "preprocess": preprocess, "img_size": config.image_size, "patch_size": config.patch_size,
            "embed_dim": config.hidden_size, "depth": config.num_layers, "num_heads": config.num_heads,
            "mlp_ratio": config.intermediate_size / config.hidden_size, "act_layer": _ACTIVATIONS[config.hidden_act]}


@register_architecture(LLM2CLIPConfig)
class LLM2CLIPEncoder(nn.Module):
    """LLM2CLIP's image side and text head, without the LLM: the module names are ``DualTower``'s, so
    ``dual_tower(text_tower)`` hands the same weights to a dual tower."""

    architecture = "llm2clip"

    def __init__(self, config: LLM2CLIPConfig):
        super().__init__()
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"LLM2CLIP vision hidden_act {config.hidden_act!r}; importable: {sorted(_ACTIVATIONS)}")
        self.config = config
        self.image_tower = ImageTower(**image_tower_args(config))
        self.image_proj = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.text_adapter = TextAdapter(config.text_dim, config.adapter_layers, config.adapter_expansion)
        self.text_norm = nn.LayerNorm(config.text_dim)
        self.text_proj = nn.Linear(config.text_dim, config.projection_dim, bias=True)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale)))
        self.meta: dict = {}

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, H, W) CLIP-normalised pixels -> (B, projection_dim): transformers' ``get_image_features``."""
        return self.image_proj(self.image_tower.model(pixel_values))

    def text_features(self, features: Tensor) -> Tensor:
        """(B, text_dim) LLM2Vec features -> (B, projection_dim): L2-normalised, adapter, LayerNorm, Linear (TextProj)."""
        return self.text_proj(self.text_norm(self.text_adapter(F.normalize(features, dim=-1))))

    def encode_image(self, images: Tensor) -> Tensor:
        """Grayscale (B, 1, H, W) as the CXR pipeline normalises it -> unit vectors (B, projection_dim), as DualTower."""
        return F.normalize(self.image_proj(self.image_tower(images)), dim=-1)

    def encode_text(self, features: Tensor) -> Tensor:
        return F.normalize(self.text_features(features), dim=-1)

    def forward(self, pixel_values: Tensor, features: Tensor) -> dict:
        return {"image_features": F.normalize(self.image_features(pixel_values), dim=-1),
                "text_features": self.encode_text(features), "logit_scale": self.logit_scale.exp().clamp(max=100.0)}

    def dual_tower(self, text_tower: nn.Module):
        """A ``DualTower`` of these weights and ``text_tower`` (its LLM2Vec encoder, frozen as LLM2CLIP trains it)."""
        from .dual import DualTower

        c = self.config
        width = getattr(text_tower, "output_dim", None) or text_tower.hidden_size
        if width != c.text_dim:
            raise ValueError(f"this LLM2CLIP adapter takes {c.text_dim}-wide features, the text tower gives {width}; "
                             "pair it with the LLM2Vec model it was trained with")
        dual = DualTower(self.image_tower, text_tower, embed_dim=c.projection_dim, freeze_text=True,
                         adapter_layers=c.adapter_layers, adapter_expansion=c.adapter_expansion,
                         init_logit_scale=float(self.logit_scale.detach()), text_proj_norm=True, proj_bias=True,
                         image_proj_bias=False, text_input_l2=True)
        state = dict(self.state_dict())
        state.update({f"text_tower.{k}": v for k, v in text_tower.state_dict().items()})
        dual.load_state_dict(state, strict=True)
        dual.meta = dict(self.meta)
        return dual.eval()


_L = r"vision_model\.encoder\.layers\.(\d+)\."
VISION = KeyMap(
    renames=[
        (r"vision_model\.embeddings\.patch_embedding\.weight", "image_tower.model.patch_embed.proj.weight"),
        (r"vision_model\.pre_layrnorm\.(weight|bias)", "image_tower.model.norm_pre.{0}"),
        (_L + r"self_attn\.out_proj\.(weight|bias)", "image_tower.model.blocks.{0}.attn.proj.{1}"),
        (_L + r"layer_norm(1|2)\.(weight|bias)", "image_tower.model.blocks.{0}.norm{1}.{2}"),
        (_L + r"mlp\.(fc1|fc2)\.(weight|bias)", "image_tower.model.blocks.{0}.mlp.{1}.{2}"),
        # post_layernorm acts on the pooled CLS token; timm's final norm on every token: the same for the CLS token
        (r"vision_model\.post_layernorm\.(weight|bias)", "image_tower.model.norm.{0}"),
        (r"visual_projection\.weight", "image_proj.weight"),
        (r"logit_scale", "logit_scale"),
    ],
    dropped={
        r"^vision_model\.embeddings\.position_ids$": "position indices: a buffer, not a weight",
        r"^(text_model|text_projection)\.": "the CLIP text transformer / its projection: get_text_features maps LLM2Vec "
                                           "features through text_adapter instead",
    },
)
_QKV = re.compile(_L + r"self_attn\.(q|k|v)_proj\.(weight|bias)")
_ADAPTOR = re.compile(r"text_adapter\.(?:adaptor|text_adaptor)\.(\d+)\.(?:(ln|fn\.0|fn\.3)\.)?(weight|bias)")
_BLOCK_PARTS = {"ln": 0, "fn.0": 1, "fn.3": 3}  # LinearBlock -> TextAdapter's Sequential(LayerNorm, Linear, GELU, Linear)


def is_llm2clip(hf: dict) -> bool:
    return bool(set(hf.get("architectures") or ()) & set(ARCHITECTURES)) or \
        (hf.get("auto_map") or {}).get("AutoModel") == AUTO_MODEL


def config_from_hf(hf: dict, state: dict[str, Tensor]) -> LLM2CLIPConfig:
    """The config of an LLM2CLIP folder: vision sizes from ``vision_config`` (transformers' defaults for unset
    fields), the adapter's sizes from its weights."""
    from transformers import CLIPVisionConfig

    vc = CLIPVisionConfig(**{k: v for k, v in (hf.get("vision_config") or {}).items() if k != "model_type"})
    if vc.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"vision_config.hidden_act {vc.hidden_act!r} is not importable (known: {sorted(_ACTIVATIONS)})")
    if abs(vc.layer_norm_eps - 1e-5) > 1e-12:
        raise ValueError(f"vision_config.layer_norm_eps {vc.layer_norm_eps}: the CLIP ViT here uses 1e-5")
    blocks = sorted({int(m.group(1)) for k in state if (m := _ADAPTOR.fullmatch(k)) and m.group(2) == "ln"})
    if not blocks or blocks != list(range(len(blocks))):
        raise KeyError(f"no text_adapter.adaptor.<i>.ln.* blocks numbered from 0 (found {blocks}); expected {EXPECTED}")
    n = len(blocks)
    prefix = "text_adapter.adaptor." if any(k.startswith("text_adapter.adaptor.") for k in state) else "text_adapter.text_adaptor."
    d = state[f"{prefix}0.ln.weight"].shape[0]
    hidden = state[f"{prefix}0.fn.0.weight"].shape[0]
    if hidden % d:
        raise ValueError(f"text adapter block width {hidden} is not a multiple of its input width {d}")
    out = state[f"{prefix}{n + 1}.weight"].shape[0]
    if out != hf.get("projection_dim", out):
        raise ValueError(f"the adapter projects to {out}, config.json's projection_dim is {hf['projection_dim']}")
    return LLM2CLIPConfig(
        image_size=vc.image_size, patch_size=vc.patch_size, hidden_size=vc.hidden_size,
        intermediate_size=vc.intermediate_size, num_layers=vc.num_hidden_layers, num_heads=vc.num_attention_heads,
        hidden_act=vc.hidden_act, projection_dim=out, text_dim=d, adapter_layers=n, adapter_expansion=hidden // d,
        logit_scale=float(hf.get("logit_scale_init_value", math.log(1 / 0.07))))


def convert_state_dict(state: dict[str, Tensor], config: LLM2CLIPConfig) -> dict[str, Tensor]:
    """LLM2CLIPModel's state dict -> LLM2CLIPEncoder's. Raises KeyError naming every key that is neither mapped nor dropped."""
    n = config.adapter_layers
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}

    def special(key: str, value: Tensor, out: dict) -> bool:
        if m := _QKV.fullmatch(key):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        elif key == "vision_model.embeddings.class_embedding":
            out["image_tower.model.cls_token"] = value.reshape(1, 1, -1)  # (D,) -> (1, 1, D)
        elif key == "vision_model.embeddings.position_embedding.weight":
            out["image_tower.model.pos_embed"] = value[None]  # (1 + N, D) -> (1, 1 + N, D)
        elif m := _ADAPTOR.fullmatch(key):
            i, part, kind = int(m.group(1)), m.group(2), m.group(3)
            if i < n and part is not None:  # LinearBlock i
                out[f"text_adapter.blocks.{i}.{_BLOCK_PARTS[part]}.{kind}"] = value
            elif i == n and part is None:  # the LayerNorm after the blocks
                out[f"text_norm.{kind}"] = value
            elif i == n + 1 and part is None:  # the projection
                out[f"text_proj.{kind}"] = value
            else:
                return False
        else:
            return False
        return True

    out = VISION.convert(state, special)
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"vision layer {layer} attention {kind} lacks {sorted({'q', 'k', 'v'} - set(parts))}")
        out[f"image_tower.model.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in "qkv"])  # rows [q; k; v]
    if "logit_scale" in out:
        out["logit_scale"] = out["logit_scale"].reshape(())
    return out


@register_importer("clip")
def load_hf_llm2clip(folder: Path) -> tuple[LLM2CLIPEncoder, dict]:
    from .llm2vec_release import read_weights

    hf = read_config(folder)
    if not is_llm2clip(hf):
        raise ValueError(f"{folder / 'config.json'}: a 'clip' folder with architectures {hf.get('architectures')} is not "
                         f"LLM2CLIP; expected {EXPECTED}. A plain CLIP / open_clip tower loads as an ImageTower "
                         "(pretrained='hf-hub:...')")
    state = read_weights(folder)
    config = config_from_hf(hf, state)
    encoder = LLM2CLIPEncoder(config)
    converted = convert_state_dict(state, config)
    if "logit_scale" not in converted:
        converted["logit_scale"] = encoder.logit_scale.detach().clone()
    missing = sorted(set(encoder.state_dict()) - set(converted))
    if missing:
        raise KeyError(f"{folder}: the weights lack {missing[:6]} (+{max(0, len(missing) - 6)} more); expected {EXPECTED}")
    encoder.load_state_dict(converted, strict=True)
    meta = {"source": str(folder), "model_type": "clip", "layout": "llm2clip-hf", "name": hf.get("_name_or_path", ""),
            "image_tower": encoder.image_tower.name, "adapter_layers": config.adapter_layers,
            "text_input": "LLM2Vec features, L2-normalised before the adapter (upstream TextProj)",
            "preprocess": encoder.image_tower.preprocess, "dropped": VISION.dropped_keys(state)}
    return encoder, meta


@register_parity("clip")
def llm2clip_parity(folder: Path, encoder: LLM2CLIPEncoder) -> float:
    """Image features of two random images against transformers' CLIPVisionModel (the folder's vision_model.* weights)
    + visual_projection; text features of three random LLM2Vec-wide vectors against TextProj's formulas on the
    folder's own tensors. The larger max abs difference."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from .llm2vec_release import read_weights

    hf = read_config(folder)
    state = read_weights(folder)
    ref = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in hf["vision_config"].items() if k != "model_type"})).eval()
    vision = {k[len("vision_model."):]: v for k, v in state.items()
              if k.startswith("vision_model.") and not k.endswith("position_ids")}
    getattr(ref, "vision_model", ref).load_state_dict(vision, strict=True)  # transformers 4 nests it, 5 does not
    c = encoder.config
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, c.image_size, c.image_size, generator=g)
    theirs = ref(pixel_values=pixels).pooler_output @ state["visual_projection.weight"].T  # (2, P)
    image = float((encoder.image_features(pixels) - theirs).abs().max())
    prefix = "text_adapter.adaptor." if "text_adapter.adaptor.0.ln.weight" in state else "text_adapter.text_adaptor."

    def p(name: str) -> Tensor:
        return state[prefix + name]

    f = torch.randn(3, c.text_dim, generator=g)
    x = F.normalize(f, dim=-1)
    for i in range(c.adapter_layers):  # LinearBlock: x + fn(ln(x))
        h = F.layer_norm(x, x.shape[-1:], p(f"{i}.ln.weight"), p(f"{i}.ln.bias"))
        x = x + F.linear(F.gelu(F.linear(h, p(f"{i}.fn.0.weight"), p(f"{i}.fn.0.bias"))), p(f"{i}.fn.3.weight"), p(f"{i}.fn.3.bias"))
    n = c.adapter_layers
    x = F.linear(F.layer_norm(x, x.shape[-1:], p(f"{n}.weight"), p(f"{n}.bias")), p(f"{n + 1}.weight"), p(f"{n + 1}.bias"))
    text = float((encoder.text_features(f) - x).abs().max())
    return max(image, text)

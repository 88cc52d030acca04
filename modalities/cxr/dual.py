"""The image-report dual tower (CLIP / SigLIP; LLM2CLIP when the text tower is frozen).

LLM2CLIP: the LLM2Vec text tower stays frozen, a trainable adapter (residual MLP) and a
projection sit on top of its pooled output, and the image tower with its projection trains.
Features come out L2-normalised with the logit scale (and SigLIP's bias), the inputs that
open_clip's ``ClipLoss`` / ``SigLipLoss`` take.

On disk a trained dual tower is its text tower's encoder folder (what ``tessera embed`` reads)
with the rest under ``dual_tower/``: ``config.json`` (the image tower's and the dual tower's
constructor arguments) and ``model.safetensors`` (image tower, adapter, projections, logit
scale and bias). ``save_dual_tower`` writes that part, ``load_dual_tower`` rebuilds the whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .towers import freeze


class TextAdapter(nn.Module):
    """LLM2CLIP's adapter on frozen text features: residual MLP blocks, then nothing else."""

    def __init__(self, dim: int, layers: int = 1, expansion: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * expansion), nn.GELU(), nn.Linear(dim * expansion, dim))
            for _ in range(layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


class DualTower(nn.Module):
    """image tower + text tower -> a shared ``embed_dim`` space.

    Args:
        image_tower: ``ImageTower`` (or any module (B, 1, H, W) -> (B, D_img) with ``output_dim``).
        text_tower: ``TextTower`` or ``LLM2VecEncoder`` (``encode(ids, mask) -> (B, D_txt)``).
        embed_dim: shared embedding width.
        freeze_text: LLM2CLIP: the text tower does not train (only adapter + projection do).
        adapter_layers: residual MLP blocks on the text features (0: projection only).
        init_logit_scale: log of the initial temperature inverse (CLIP: log(1/0.07); SigLIP: log(10)).
        init_logit_bias: SigLIP's learnable bias (-10); None for CLIP.
        text_proj_norm: a LayerNorm between the adapter and the text projection (LLM2CLIP's
            ``TextProj`` ends adapter -> LayerNorm -> Linear).
        proj_bias: biases in both projections (LLM2CLIP: the text Linear and EVA's image head have one).
        image_proj_bias: the image projection's bias when it differs from ``proj_bias`` (LLM2CLIP's HF release:
            CLIP's ``visual_projection`` has none, the text Linear has one).
        adapter_expansion: the adapter blocks' hidden width over the text width (LLM2CLIP: 2).
        text_input_l2: L2-normalise the text tower's features before the adapter (LLM2CLIP's ``TextProj``;
            not LLM2CLIP4CXR, whose projection takes them as they are).
    """

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, embed_dim: int = 256,
                 freeze_text: bool = True, adapter_layers: int = 1, init_logit_scale: float = math.log(1 / 0.07),
                 init_logit_bias: float | None = None, text_proj_norm: bool = False, proj_bias: bool = False,
                 image_proj_bias: bool | None = None, adapter_expansion: int = 2, text_input_l2: bool = False):
        super().__init__()
        self.spec = {"embed_dim": embed_dim, "freeze_text": freeze_text, "adapter_layers": adapter_layers,
                     "init_logit_scale": float(init_logit_scale), "init_logit_bias": init_logit_bias}
        if text_proj_norm or proj_bias:  # recorded only when set: folders written before load unchanged
            self.spec.update(text_proj_norm=text_proj_norm, proj_bias=proj_bias)
        for key, value, default in (("image_proj_bias", image_proj_bias, None), ("adapter_expansion", adapter_expansion, 2),
                                    ("text_input_l2", text_input_l2, False)):
            if value != default:
                self.spec[key] = value
        self.text_input_l2 = text_input_l2
        self.image_tower = image_tower
        self.text_tower = freeze(text_tower) if freeze_text else text_tower
        self.freeze_text = freeze_text
        d_txt = getattr(text_tower, "output_dim", None) or text_tower.hidden_size
        self.text_adapter = TextAdapter(d_txt, adapter_layers, adapter_expansion) if adapter_layers else nn.Identity()
        self.text_norm = nn.LayerNorm(d_txt) if text_proj_norm else nn.Identity()
        self.text_proj = nn.Linear(d_txt, embed_dim, bias=proj_bias)
        self.image_proj = nn.Linear(image_tower.output_dim, embed_dim,
                                    bias=proj_bias if image_proj_bias is None else image_proj_bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias))) if init_logit_bias is not None else None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_text:
            self.text_tower.eval()  # no dropout in a frozen tower
        return self

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The text tower's pooled output (B, D_txt): cacheable when the tower is frozen."""
        if self.freeze_text:
            with torch.no_grad():
                return self.text_tower.encode(input_ids, attention_mask)
        return self.text_tower.encode(input_ids, attention_mask)

    def encode_text(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                    features: Tensor | None = None) -> Tensor:
        f = features if features is not None else self.text_features(input_ids, attention_mask)
        if self.text_input_l2:
            f = F.normalize(f, dim=-1)  # (B, D_txt) on the unit sphere, as LLM2CLIP's TextProj takes them
        return F.normalize(self.text_proj(self.text_norm(self.text_adapter(f))), dim=-1)  # (B, E)

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.image_proj(self.image_tower(images)), dim=-1)  # (B, E)

    def forward(self, images: Tensor, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                text_features: Tensor | None = None) -> dict:
        out = {
            "image_features": self.encode_image(images),
            "text_features": self.encode_text(input_ids, attention_mask, text_features),
            "logit_scale": self.logit_scale.exp().clamp(max=100.0),
        }
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out


DUAL_DIR = "dual_tower"  # beside the text tower's config.json in an exported encoder folder
DUAL_FORMAT = "tessera-dual-tower"


def save_dual_tower(dual: DualTower, folder: str | Path) -> Path:
    """Write everything of ``dual`` but its text tower into ``folder/dual_tower`` (the text tower
    is the encoder folder itself, written by its own exporter). Returns that sub-folder."""
    from safetensors.torch import save_file

    spec = getattr(dual.image_tower, "spec", None)
    if spec is None:
        raise ValueError(f"{type(dual.image_tower).__name__} has no `spec` to rebuild it from; use ImageTower")
    out = Path(folder) / DUAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in dual.state_dict().items() if not k.startswith("text_tower.")}
    save_file(state, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"format": DUAL_FORMAT, "image_tower": spec, "dual": dual.spec},
                                                indent=2) + "\n")
    return out


def load_dual_tower(folder: str | Path) -> DualTower:
    """An exported dual tower: the text tower from ``folder`` (``load_text_tower``), the image
    tower, adapter, projections and logit scale from ``folder/dual_tower``; every key loaded
    strictly. Raises ``FileNotFoundError`` / ``ValueError`` naming the file that is missing or bad."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .towers import ImageTower, load_text_tower

    sub = Path(folder) / DUAL_DIR
    cfg_path = sub / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} has no {DUAL_DIR}/config.json; it is not an exported dual tower "
                                "(the encoder folder of a CLIPSystem run has one)")
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != DUAL_FORMAT:
        raise ValueError(f"{cfg_path} is not a dual-tower config (format {DUAL_FORMAT!r})")
    try:
        state = load_file(sub / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{sub / 'model.safetensors'} is not a readable safetensors file ({e}); export it again") from None
    text = load_text_tower(folder)
    dual = DualTower(ImageTower(**raw["image_tower"]), text, **raw["dual"])
    state.update({f"text_tower.{k}": v for k, v in text.state_dict().items()})
    dual.load_state_dict(state, strict=True)
    return dual.eval()

"""The two towers' common faces: ``TextTower`` (any token encoder + a pooler) and ``ImageTower``
(a timm model or an open_clip visual tower, built by name, grayscale input).

Both towers expose ``output_dim``; text towers ``encode(input_ids, attention_mask) -> (B, D)``,
image towers ``forward(images (B, 1, H, W)) -> (B, D)``. ``LLM2VecEncoder`` has the same
``encode`` and ``hidden_size``, so either text tower plugs into ``DualTower``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..backbone.pooling import create_pooler

IMAGE_SOURCES = ("timm", "open_clip")


class TextTower(nn.Module):
    """A Tessera token encoder (BERT-like; HF BERT through ``load_encoder``) + a pooler."""

    def __init__(self, encoder: nn.Module, pooling: str = "mean", init_from: str | None = None):
        super().__init__()
        if init_from is not None:  # a Tessera / HF folder whose weights replace the fresh ones
            from ..hub import load_encoder

            encoder.load_state_dict(load_encoder(init_from).state_dict(), strict=True)
        self.encoder = encoder
        self.pooling = pooling
        self.hidden_size = encoder.config.hidden_size
        self.pooler = create_pooler(pooling, self.hidden_size)

    @property
    def output_dim(self) -> int:
        return self.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kw):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.pooler(out.last_hidden_state, out.mask)  # (B, D)


class ImageTower(nn.Module):
    """An image backbone by name: any timm model (``in_chans=1``, classifier removed) or an
    open_clip model's visual tower (its 3-channel stem gets the grayscale image repeated); or a
    pretrained tower by its published name, read from a local HF hub cache (``cache_dir``), offline.

    Args:
        name: timm model name (``resnet18``, ``vit_small_patch16_224``, ...) or open_clip model
            name (``ViT-B-32``, ``RN50``, ...).
        source: "timm" or "open_clip".
        init_from: a local weight file to start from (timm: .safetensors/.pth state dict of the
            same model, ImageNet-shaped stems summed to one channel; open_clip: a checkpoint file
            it can read); None = random init. Nothing is fetched.
        image_size: input size (open_clip needs it at build time; timm models adapt).
        pretrained: a published name (timm ``resnet18.a1_in1k`` / ``hf-hub:timm/...``; open_clip
            ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` / ``ViT-B-32.<tag>``)
            whose config and weights are read from the HF cache (``modalities.cxr.hf_cache``); the
            tower then keeps its 3-channel stem and its own preprocessing (``preprocess``: size,
            per-channel mean/std, interpolation), replacing ``name`` / ``init_from``.
        cache_dir: the HF hub cache (default ``$HF_HUB_CACHE`` or huggingface_hub's).
        preprocess / open_clip_cfg: what ``spec`` records to rebuild a pretrained tower without its
            cache (set by ``pretrained``; not meant to be written by hand).
        input_mean / input_std: the normalisation the data pipeline applied (``CXRTransform``'s
            defaults); a pretrained tower undoes it and applies its own per-channel mean/std.
        kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    ``spec`` holds the arguments that rebuild the architecture (not ``init_from`` / ``pretrained``:
    an exported dual tower carries the trained weights itself).
    """

    def __init__(self, name: str = "resnet18", source: str = "timm", init_from: str | None = None,
                 image_size: int = 224, pretrained: str | None = None, cache_dir: str | None = None,
                 preprocess: dict | None = None, open_clip_cfg: dict | None = None, input_mean: float = 0.5,
                 input_std: float = 0.25, **kwargs):
        super().__init__()
        if source not in IMAGE_SOURCES:
            raise ValueError(f"image tower source {source!r} is not one of {IMAGE_SOURCES}")
        if init_from is not None and not Path(init_from).is_file():
            raise FileNotFoundError(f"image tower init_from {init_from} does not exist; give a local weight file")
        if pretrained is not None and init_from is not None:
            raise ValueError("image tower: give pretrained (a published name) or init_from (a weight file), not both")
        state = None
        self.meta: dict = {}
        if pretrained is not None:
            from .hf_cache import read_weights, resolve_pretrained

            found = resolve_pretrained(pretrained, source, cache_dir)
            name, preprocess, open_clip_cfg = found.architecture, found.preprocess, found.model_cfg or None
            state = read_weights(found.weights)
            self.meta = {"pretrained": pretrained, "repo": found.repo, "weights": str(found.weights)}
        self.name, self.source = name, source
        self.preprocess = preprocess
        self.spec = {"name": name, "source": source, "image_size": image_size, **kwargs}
        if preprocess is not None:
            self.spec.update(preprocess=preprocess, input_mean=input_mean, input_std=input_std)
        if open_clip_cfg is not None:
            self.spec["open_clip_cfg"] = open_clip_cfg
        if source == "timm":
            import timm

            if name not in timm.list_models():
                raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
            if preprocess is not None:  # a pretrained tower: its own 3-channel stem, weights below
                self.model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=3, **kwargs)
                self.in_chans = 3
            else:
                extra = {"pretrained_cfg_overlay": {"file": init_from}} if init_from else {}
                self.model = timm.create_model(name, pretrained=init_from is not None, num_classes=0, in_chans=1,
                                               **extra, **kwargs)
                self.in_chans = 1
            self._dim = self.model.num_features
        elif open_clip_cfg is not None:
            from open_clip.model import _build_vision_tower

            self.model = _build_vision_tower(open_clip_cfg["embed_dim"], open_clip_cfg["vision_cfg"],
                                             quick_gelu=bool(open_clip_cfg.get("quick_gelu", False)))
            self._dim = open_clip_cfg["embed_dim"]
            self.in_chans = 3
        else:
            import open_clip

            if name not in open_clip.list_models():
                raise ValueError(f"open_clip has no model {name!r}; see open_clip.list_models()")
            clip = open_clip.create_model(name, pretrained=init_from, force_image_size=image_size)
            self.model = clip.visual
            self._dim = clip.visual.output_dim
            self.in_chans = 3
        if preprocess is not None:  # (3, 1, 1): the tower's own per-channel statistics
            self.register_buffer("pixel_mean", torch.tensor(preprocess["mean"]).view(3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(preprocess["std"]).view(3, 1, 1), persistent=False)
            self.input_mean, self.input_std = float(input_mean), float(input_std)
        if state is not None:
            self.meta["dropped"] = self._load_pretrained(state)

    def _load_pretrained(self, state: dict) -> dict[str, str]:
        """Load the image tower's part of a pretrained state dict strictly; name what is left out."""
        if self.source == "timm":
            heads = self.preprocess.get("classifier") or ()
            heads = (heads,) if isinstance(heads, str) else tuple(heads)
            dropped = {k: "the classifier head (the tower is built with num_classes=0)" for k in state
                       if any(k == h or k.startswith(h + ".") for h in heads)}
            kept = {k: v for k, v in state.items() if k not in dropped}
        else:
            dropped = {k: "the CLIP model's text side / logit scale, not the image tower" for k in state
                       if not k.startswith("visual.")}
            kept = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
        self.model.load_state_dict(kept, strict=True)
        return dropped

    @property
    def output_dim(self) -> int:
        return self._dim

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W) grayscale, got {tuple(images.shape)}")
        if self.preprocess is not None:  # the pipeline's normalisation undone, the tower's own applied
            pixels = images * self.input_std + self.input_mean  # (B, 1, H, W) in the image's [0, 1] range
            images = (pixels.expand(-1, 3, -1, -1) - self.pixel_mean) / self.pixel_std  # (B, 3, H, W)
        elif self.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)
        return self.model(images)  # (B, D)

    def transform(self, train: bool = False):
        """The ``CXRTransform`` that feeds this tower: its own input size for a pretrained tower,
        normalised as ``input_mean`` / ``input_std`` say (which ``forward`` turns into its own)."""
        from .images import CXRTransform

        if self.preprocess is None:
            return CXRTransform(self.spec["image_size"], random_crop=train)
        return CXRTransform(self.preprocess["image_size"], mean=self.input_mean, std=self.input_std, random_crop=train)


def load_text_tower(folder: str | Path) -> nn.Module:
    """A saved text tower: an LLM2Vec folder as it is, any other encoder wrapped in ``TextTower``
    with the pooling its metadata names (mean by default)."""
    from ..hub import load_encoder

    enc = load_encoder(folder)
    if hasattr(enc, "encode"):
        return enc
    return TextTower(enc, pooling=getattr(enc, "meta", {}).get("pooling", "mean")).eval()


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


__all__ = ["ImageTower", "TextTower", "count_trainable", "freeze", "load_text_tower"]

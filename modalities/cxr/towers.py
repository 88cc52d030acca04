"""The two towers' common faces: ``TextTower`` (any token encoder + a pooler) and ``ImageTower``
(a timm model or an open_clip visual tower, built by name, grayscale input).

Both towers expose ``output_dim``; text towers ``encode(input_ids, attention_mask) -> (B, D)``,
image towers ``forward(images (B, 1, H, W)) -> (B, D)``. ``LLM2VecEncoder`` has the same
``encode`` and ``hidden_size``, so either text tower plugs into ``DualTower``.
"""

from __future__ import annotations

from pathlib import Path

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
    open_clip model's visual tower (its 3-channel stem gets the grayscale image repeated).

    Args:
        name: timm model name (``resnet18``, ``vit_small_patch16_224``, ...) or open_clip model
            name (``ViT-B-32``, ``RN50``, ...).
        source: "timm" or "open_clip".
        init_from: a local weight file to start from (timm: .safetensors/.pth state dict of the
            same model, ImageNet-shaped stems summed to one channel; open_clip: a checkpoint file
            it can read); None = random init. Nothing is fetched.
        image_size: input size (open_clip needs it at build time; timm models adapt).
        kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    ``spec`` holds the arguments that rebuild the architecture (not ``init_from``: an exported
    dual tower carries the trained weights itself).
    """

    def __init__(self, name: str = "resnet18", source: str = "timm", init_from: str | None = None,
                 image_size: int = 224, **kwargs):
        super().__init__()
        if source not in IMAGE_SOURCES:
            raise ValueError(f"image tower source {source!r} is not one of {IMAGE_SOURCES}")
        if init_from is not None and not Path(init_from).is_file():
            raise FileNotFoundError(f"image tower init_from {init_from} does not exist; give a local weight file")
        self.name, self.source = name, source
        self.spec = {"name": name, "source": source, "image_size": image_size, **kwargs}
        if source == "timm":
            import timm

            if name not in timm.list_models():
                raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
            extra = {"pretrained_cfg_overlay": {"file": init_from}} if init_from else {}
            self.model = timm.create_model(name, pretrained=init_from is not None, num_classes=0, in_chans=1,
                                           **extra, **kwargs)
            self._dim = self.model.num_features
            self.in_chans = 1
        else:
            import open_clip

            if name not in open_clip.list_models():
                raise ValueError(f"open_clip has no model {name!r}; see open_clip.list_models()")
            clip = open_clip.create_model(name, pretrained=init_from, force_image_size=image_size)
            self.model = clip.visual
            self._dim = clip.visual.output_dim
            self.in_chans = 3

    @property
    def output_dim(self) -> int:
        return self._dim

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W) grayscale, got {tuple(images.shape)}")
        if self.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)
        return self.model(images)  # (B, D)


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

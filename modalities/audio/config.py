"""The audio encoder's config: the shared backbone's fields plus MERT-v1's waveform frontend.

Defaults are MERT-v1-95M (HF ``m-a-p/MERT-v1-95M``): 24 kHz mono, a 7-layer conv feature
extractor of total stride 320 (75 frames/s), GroupNorm on its first layer, a conv positional
embedding, 12 post-LN layers of width 768. ``mert-v1-330m`` in ``presets.py`` switches to the
pre-LN ("stable layer norm") layout with a LayerNorm after every conv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..backbone.config import BackboneConfig

FEATURE_NORMS = ("group", "layer")


@dataclass
class AudioEncoderConfig(BackboneConfig):
    # backbone fields, MERT-v1-95M values (HF Hubert names in comments)
    position: str = "none"  # the conv positional embedding in the frontend gives positions
    layer_norm_eps: float = 1e-5  # layer_norm_eps
    hidden_dropout: float = 0.1  # hidden_dropout
    attention_dropout: float = 0.1  # attention_dropout
    attention_backend: str = "unpadded"  # ragged batches of clips: padding removed once
    # waveform frontend
    sample_rate: int = 24000  # Hz the model expects; readers resample to it (MERT: 24 kHz)
    conv_dim: list[int] = field(default_factory=lambda: [512] * 7)  # channels per conv layer
    conv_kernel: list[int] = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])  # kernel per layer
    conv_stride: list[int] = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])  # stride per layer
    conv_bias: bool = False  # biases in the conv layers (MERT-v1: none)
    feat_extract_norm: str = "group"  # group: GroupNorm(C, C) on conv 0 only (95M) | layer: LayerNorm after every conv (330M)
    feat_proj_layer_norm: bool = True  # LayerNorm on the conv features before the projection
    feat_proj_dropout: float = 0.0  # dropout after the feature projection
    num_conv_pos_embeddings: int = 128  # kernel of the conv positional embedding
    num_conv_pos_embedding_groups: int = 16  # its groups

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.conv_dim)
        if not n or len(self.conv_kernel) != n or len(self.conv_stride) != n:
            raise ValueError(
                f"AudioEncoderConfig: conv_dim, conv_kernel, conv_stride need one entry per conv layer, "
                f"got {len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if self.feat_extract_norm not in FEATURE_NORMS:
            raise ValueError(
                f"AudioEncoderConfig: feat_extract_norm {self.feat_extract_norm!r} is not one of {FEATURE_NORMS}"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"AudioEncoderConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}"
            )
        if self.position not in ("none", "alibi", "rope"):
            raise ValueError(
                "AudioEncoderConfig: position must be none (conv positional embedding only), alibi or "
                f"rope; 'absolute' needs a learned table the waveform frontend does not have, got {self.position!r}"
            )

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of the strides (MERT: 320, i.e. 75 Hz at 24 kHz)."""
        return math.prod(self.conv_stride)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees; a clip shorter than this yields no frame (MERT: 400)."""
        field_, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride, strict=True):
            field_ += (k - 1) * jump
            jump *= s
        return field_

    def num_frames(self, num_samples: int) -> int:
        """Frames the conv stack gives for a clip of ``num_samples`` (0 if it is too short)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride, strict=True):
            n = (n - k) // s + 1 if n >= k else 0
        return max(n, 0)

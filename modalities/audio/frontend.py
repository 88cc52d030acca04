"""MERT-v1's waveform frontend: raw 24 kHz audio -> (frame embeddings (B, T, D), frame mask (B, T)).

    waveform (B, S) --conv stack, stride 320--> (B, 512, T) --LayerNorm + Linear--> (B, T, D)
      [--masked frames -> masked_spec_embed] --+ conv positional embedding--> [LayerNorm: post-LN]

Module names follow HF's Hubert (``feature_extractor.conv_layers.N.conv``,
``feature_projection``, ``pos_conv_embed.conv``, ``masked_spec_embed``), so MERT-v1 weights map
one to one (see ``hf_mert.py``).

Ragged batches: ``attention_mask`` (B, S) marks the real samples (a right-padded prefix);
the frame mask keeps the frames the conv stack computes from real samples only. Padded
frames are zeroed before the positional conv, as HF does. One deliberate difference from HF:
the GroupNorm of the first conv (95M layout) normalises each clip over its *own* samples;
HF normalises over the padded length too, so there a clip's features change with the
padding of the batch it sits in. Ours equal HF run on each clip alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbone.linear import Linear
from .config import AudioEncoderConfig
from .masking import length_mask


class ConvLayer(nn.Module):
    """conv -> [GroupNorm | LayerNorm over channels] -> GELU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group":  # one group per channel: normalises each channel over time
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, elementwise_affine=True)
        nn.init.kaiming_normal_(self.conv.weight)

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        # x: (B, C_in, S); lengths: (B,) valid output steps, None when nothing is padded
        x = self.conv(x)  # (B, C, T)
        if self.norm_kind == "group":
            x = self.layer_norm(x) if lengths is None else self._masked_group_norm(x, lengths)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)

    def _masked_group_norm(self, x: Tensor, lengths: Tensor) -> Tensor:
        """GroupNorm(C, C) with each clip's statistics taken over its real steps only.

        torch's own group_norm kernel on each clip's real slice, so a clip's features equal HF's on
        that clip alone bit for bit (statistics by var_mean + one scale-and-shift differed by ~3e-6);
        padded steps are zeros. Measured no slower (fwd and fwd+bwd, 4 clips of 2-5 s).
        """
        gn, T = self.layer_norm, x.shape[-1]
        return torch.cat([F.pad(F.group_norm(x[b : b + 1, :, :n], gn.num_groups, gn.weight, gn.bias, gn.eps), (0, T - n))
                          for b, n in enumerate(lengths.tolist())])  # (B, C, T)


class FeatureExtractor(nn.Module):
    """The 7-layer conv stack: (B, S) samples -> (B, C, T) frames."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        layers = []
        c_in = 1
        for i, (c, k, s) in enumerate(zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True)):
            norm = "layer" if config.feat_extract_norm == "layer" else ("group" if i == 0 else None)
            layers.append(ConvLayer(c_in, c, k, s, config.conv_bias, norm))
            c_in = c
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = wav[:, None]  # (B, 1, S)
        for layer in self.conv_layers:
            k, s = layer.conv.kernel_size[0], layer.conv.stride[0]
            if lengths is not None:
                lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1  # (B,) valid steps out
            x = layer(x, lengths)
        return x  # (B, C, T)


class FeatureProjection(nn.Module):
    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        c = config.conv_dim[-1]
        self.layer_norm = nn.LayerNorm(c, eps=config.layer_norm_eps) if config.feat_proj_layer_norm else None
        self.projection = Linear(c, config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, T, C) -> (B, T, D)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(self.projection(x))


class ConvPositionalEmbedding(nn.Module):
    """Grouped conv over time (kernel 128, 16 groups) with weight norm over the kernel axis, GELU."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        D, K, G = config.hidden_size, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        conv = nn.Conv1d(D, D, K, padding=K // 2, groups=G)
        nn.init.normal_(conv.weight, std=2 * math.sqrt(1 / (K * D)))  # wav2vec 2.0's init
        nn.init.zeros_(conv.bias)
        # weight = g * v / ||v||, norm over every axis but 2 (the kernel axis): HF weight_g/weight_v
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if K % 2 == 0 else 0  # an even kernel with padding K/2 gives one extra step

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, T, D), zeros at padded frames
        h = self.conv(x.transpose(1, 2))  # (B, D, T + trim)
        if self.trim:
            h = h[..., : -self.trim]
        return F.gelu(h).transpose(1, 2)  # (B, T, D)


class AudioFrontend(nn.Module):
    """waveform (B, S) [+ attention_mask (B, S)] -> embeddings (B, T, D), frame mask (B, T)."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(config)
        self.feature_projection = FeatureProjection(config)
        # the learned vector that replaces masked frames in pretraining (HF: masked_spec_embed)
        self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        self.pos_conv_embed = ConvPositionalEmbedding(config)
        # post-LN (95M): LayerNorm right after the positional embedding (HF: encoder.layer_norm);
        # pre-LN (330M) closes the stack with the backbone's final norm instead
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm == "post" else None
        self.dropout = nn.Dropout(config.hidden_dropout)

    def check(self, wav: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Validate a batch of waveforms; return per-clip sample counts (B,)."""
        if not torch.is_tensor(wav) or not wav.is_floating_point():
            kind = wav.dtype if torch.is_tensor(wav) else type(wav).__name__
            raise ValueError(f"input_values must be a float tensor of waveforms (B, samples), got {kind}; "
                             "convert integer PCM with modalities.audio.io.pcm_to_float")
        if wav.dim() != 2:
            hint = " (multi-channel? downmix to mono first: modalities.audio.io.to_mono)" if wav.dim() == 3 else ""
            raise ValueError(f"input_values must have shape (B, samples), got {tuple(wav.shape)}{hint}")
        if wav.shape[0] == 0:
            raise ValueError("input_values is an empty batch (0 clips); give at least one clip")
        if attention_mask is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device)
        else:
            if attention_mask.shape != wav.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match "
                                 f"input_values {tuple(wav.shape)}")
            m = attention_mask.bool()
            lengths = m.sum(-1)
            prefix = length_mask(lengths, wav.shape[1])
            if not torch.equal(m, prefix):
                raise ValueError("attention_mask must mark each clip's samples as a prefix (right padding)")
        bad = (~torch.isfinite(wav)).any(-1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"clips {bad} contain NaN or infinite samples; drop or repair them before batching")
        field_ = self.config.receptive_field
        short = (lengths < field_).nonzero().flatten().tolist()
        if short:
            raise ValueError(
                f"clips {short} have {lengths[short].tolist()} samples, fewer than the {field_}-sample "
                f"receptive field of one frame ({field_ / self.config.sample_rate * 1000:.1f} ms at "
                f"{self.config.sample_rate} Hz); pad them or drop them"
            )
        return lengths

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths

    def forward(
        self,
        input_values: Tensor,
        attention_mask: Tensor | None = None,
        mask_time_indices: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        # input_values: (B, S) float; attention_mask: (B, S); mask_time_indices: (B, T) bool
        lengths = self.check(input_values, attention_mask)
        weights = self.masked_spec_embed.dtype
        if input_values.dtype != weights:  # float64 / bf16 / fp16 clips: the convs take the weights' dtype
            input_values = input_values.to(weights)  # (autocast still runs them in bf16 where it is on)
        padded = attention_mask is not None and bool((lengths < input_values.shape[1]).any())
        feats = self.feature_extractor(input_values, lengths if padded else None)  # (B, C, T)
        T = feats.shape[-1]
        mask = length_mask(self.frame_lengths(lengths), T)  # (B, T)
        x = self.feature_projection(feats.transpose(1, 2))  # (B, T, D)
        if mask_time_indices is not None:
            if mask_time_indices.shape != mask.shape:
                raise ValueError(f"mask_time_indices shape {tuple(mask_time_indices.shape)} does not match "
                                 f"the frames {tuple(mask.shape)}")
            x = torch.where(mask_time_indices.bool()[..., None], self.masked_spec_embed.to(x.dtype), x)
        x = x * mask[..., None].to(x.dtype)  # padded frames must not leak through the positional conv
        x = x + self.pos_conv_embed(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(x), mask

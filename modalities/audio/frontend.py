"""MERT-v1's waveform frontend: raw 24 kHz audio -> (frame embeddings (B, T, D), frame mask (B, T)).

    waveform (B, S) --conv stack, stride 320, clip by clip--> (N, 512) real frames --LayerNorm + Linear--> (B, T, D)
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

from ..backbone.dropout import FastDropout
from ..backbone.linear import Linear, linear
from .config import AudioEncoderConfig
from .masking import length_mask


class ConvLayer(nn.Module):
    """conv -> [GroupNorm | LayerNorm over channels] -> GELU, on channels-last frames.

    The weights are HF's ``Conv1d`` / ``GroupNorm`` / ``LayerNorm`` (same names and shapes), but the
    conv runs as one GEMM over the unfolded windows, (b*T, k*C_in) x (k*C_in, C_out), through
    ``backbone.linear`` (oneDNN's fp32 kernel; bf16 under autocast). Measured on this CPU (3 s of
    audio, one clip, fp32, process CPU time): the stack's convs take 214 ms as GEMMs against 338 ms
    as torch's conv1d, whose oneDNN path reorders the weights on every call (32 ms for each stride-2
    kernel-2 layer whatever its length) and runs the 1-channel first layer at 3 GFLOP/s.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group":  # one group per channel: normalises each channel over time
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, elementwise_affine=True)
        nn.init.kaiming_normal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        # x: (b, S, C_in) channels-last, every step real (the clips of one length)
        conv = self.conv
        k, s = conv.kernel_size[0], conv.stride[0]
        b, C = x.shape[0], conv.out_channels
        windows = x.unfold(1, k, s)  # (b, T, C_in, k), a view
        T = windows.shape[1]
        windows = windows.transpose(2, 3).reshape(b * T, k * conv.in_channels).contiguous()  # (b*T, k*C_in), one copy
        weight = conv.weight.transpose(1, 2).reshape(C, -1)  # (C_out, k*C_in), the window's order
        x = linear(windows, weight, conv.bias)  # (b*T, C)
        if self.norm_kind == "group":
            # each clip's channels over its own steps: batch_norm's statistics over the rows of one
            # clip are GroupNorm(C, C)'s over time; one fused pass, bf16 in and out under autocast
            gn = self.layer_norm
            x = torch.cat([F.batch_norm(h, None, None, gn.weight, gn.bias, training=True, eps=gn.eps)
                           for h in x.split(T)]) if b > 1 else F.batch_norm(
                x, None, None, gn.weight, gn.bias, training=True, eps=gn.eps)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x)
        return F.gelu(x).view(b, T, C)  # (b, T, C)


class FeatureExtractor(nn.Module):
    """The 7-layer conv stack: each clip's real samples -> its frames, channels-last.

    A ragged batch runs over each clip's own samples (clips of equal length together, one batched
    call per length): no step is computed on padding (HF computes the whole padded width, 30 % more
    conv work on a batch of 2-5 s clips), and the GroupNorm of the first conv sees exactly the
    clip's own steps, with no masking pass. Under bf16 autocast every GEMM, norm and GELU here
    stays in bf16.
    """

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

    def forward(self, wav: Tensor, lengths: list[int] | None = None) -> list[Tensor]:
        # wav: (B, S); lengths: real samples per clip (a right-padded prefix), None: all S
        B, S = wav.shape
        lengths = [S] * B if lengths is None else lengths
        frames: list[Tensor | None] = [None] * B
        for n in sorted(set(lengths)):
            clips = [b for b, m in enumerate(lengths) if m == n]
            x = (wav if len(clips) == B else wav[clips])[:, :n, None]  # (b, n, 1)
            for layer in self.conv_layers:
                x = layer(x)  # (b, T_n, C)
            for j, b in enumerate(clips):
                frames[b] = x[j]
        return frames  # per clip (T_b, C)


class FeatureProjection(nn.Module):
    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        c = config.conv_dim[-1]
        self.layer_norm = nn.LayerNorm(c, eps=config.layer_norm_eps) if config.feat_proj_layer_norm else None
        self.projection = Linear(c, config.hidden_size)
        self.dropout = FastDropout(config.feat_proj_dropout)

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
        self.dropout = FastDropout(config.hidden_dropout)

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
        frames = self.feature_extractor(input_values, lengths.tolist())  # per clip (C, T_b)
        T = self.config.num_frames(input_values.shape[1])
        mask = length_mask(self.frame_lengths(lengths), T)  # (B, T)
        packed = torch.cat(frames) if len(frames) > 1 else frames[0]  # (N, C) real frames
        x = self.feature_projection(packed)  # (N, D)
        if mask_time_indices is not None:
            if mask_time_indices.shape != mask.shape:
                raise ValueError(f"mask_time_indices shape {tuple(mask_time_indices.shape)} does not match "
                                 f"the frames {tuple(mask.shape)}")
            x = torch.where(mask_time_indices.bool()[mask][:, None], self.masked_spec_embed.to(x.dtype), x)
        # padded frames are zeros: they must not leak through the positional conv
        x = x.new_zeros(*mask.shape, x.shape[-1]).index_put((mask,), x)  # (B, T, D)
        x = x + self.pos_conv_embed(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(x), mask

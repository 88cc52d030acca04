"""MERT's input corruptions: span masks over frames and the in-batch noise mixture over samples."""

from __future__ import annotations

import torch
from torch import Tensor


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) real lengths -> (B, size) bool mask of the real steps of right-padded rows."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) values, (B, T) real steps -> (B, D) mean over each row's real steps."""
    keep = mask[..., None].to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1)


def span_mask(
    frame_mask: Tensor, mask_prob: float = 0.8, span: int = 5, generator: torch.Generator | None = None
) -> Tensor:
    """(B, T) real-frame mask -> (B, T) bool mask of the frames to hide (wav2vec 2.0 / HuBERT spans).

    Per clip of L real frames, ``round(mask_prob * L / span)`` (stochastic rounding) span starts are
    drawn without replacement; each hides ``span`` frames. Spans overlap, so with 0.8 and 5 about
    half the frames end up hidden. Every clip gets at least one span.
    """
    if not 0.0 < mask_prob <= 1.0 or span < 1:
        raise ValueError(f"span_mask: need 0 < mask_prob <= 1 and span >= 1, got {mask_prob}, {span}")
    B, T = frame_mask.shape
    out = torch.zeros(B, T, dtype=torch.bool)
    lengths = frame_mask.sum(1).tolist()
    for b, L in enumerate(lengths):
        width = min(span, L)
        starts_avail = L - width + 1
        n = int(mask_prob * L / width + torch.rand((), generator=generator).item())
        n = min(max(n, 1), starts_avail)
        starts = torch.randperm(starts_avail, generator=generator)[:n]  # (n,)
        idx = (starts[:, None] + torch.arange(width)).flatten()  # (n * width,)
        out[b, idx] = True
    return out.to(frame_mask.device)


def noise_mixture(
    wav: Tensor,
    lengths: Tensor,
    sample_rate: int,
    prob: float = 0.5,
    segments: tuple[int, int] = (1, 3),
    seconds: tuple[float, float] = (0.5, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """MERT's in-batch noise: with probability ``prob`` a clip gets 1-3 segments of 0.5-1.0 s cut
    from *other* clips of the batch, added at a random place (the targets stay those of the clean clip).

    wav: (B, S), lengths: (B,) real samples. Returns a new (B, S) tensor; padding stays zero.
    """
    B = wav.shape[0]
    out = wav.clone()
    if B < 2 or prob <= 0:
        return out
    lens = lengths.tolist()
    for b in range(B):
        if torch.rand((), generator=generator).item() >= prob:
            continue
        for _ in range(int(torch.randint(segments[0], segments[1] + 1, (), generator=generator))):
            other = int(torch.randint(B - 1, (), generator=generator))
            other += other >= b  # any clip but b
            dur = seconds[0] + (seconds[1] - seconds[0]) * torch.rand((), generator=generator).item()
            n = min(int(dur * sample_rate), lens[other], lens[b])
            src = int(torch.randint(lens[other] - n + 1, (), generator=generator))
            dst = int(torch.randint(lens[b] - n + 1, (), generator=generator))
            out[b, dst : dst + n] += wav[other, src : src + n]
    return out

"""MARBLE-style probing: frozen features from every layer, mean-pooled over time, a linear probe per task.

    layer_features(encoder, clips)     -> (N, L + 1, D)  per-layer mean over each clip's real frames
    spectral_features(clips, kind)     -> (N, F)         CQT or log-mel baseline, mean over time
    linear_probe(train_x, train_y, test_x, test_y) -> test accuracy
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .io import normalize
from .masking import length_mask, masked_mean


def batches(clips: list[Tensor], batch_size: int):
    """Right-padded batches: (wav (B, S), lengths (B,))."""
    for i in range(0, len(clips), batch_size):
        chunk = clips[i : i + batch_size]
        S = max(len(c) for c in chunk)
        wav = torch.zeros(len(chunk), S)
        for r, c in enumerate(chunk):
            wav[r, : len(c)] = c
        yield wav, torch.tensor([len(c) for c in chunk])


@torch.no_grad()
def layer_features(encoder, clips: list[Tensor], batch_size: int = 32, progress: bool = False) -> Tensor:
    """Mean-pooled hidden states of every layer: (N, num_layers + 1, D)."""
    from tqdm import tqdm

    encoder.eval()
    out = []
    for wav, lengths in tqdm(list(batches(clips, batch_size)), desc="features", disable=not progress):
        attn = length_mask(lengths, wav.shape[1])
        o = encoder(input_values=normalize(wav, lengths), attention_mask=attn, output_hidden_states=True)
        pooled = [masked_mean(h, o.mask) for h in o.hidden_states]  # each (B, D)
        out.append(torch.stack(pooled, 1))  # (B, L + 1, D)
    return torch.cat(out)


@torch.no_grad()
def spectral_features(clips: list[Tensor], kind: str, sample_rate: int = 24000, batch_size: int = 32,
                      cqt_bins: int = 84, cqt_bins_per_octave: int = 12) -> Tensor:
    """Baselines: log CQT (nnAudio, hop 320, fmin 32.7 Hz) or log-mel (128 bands), mean over real frames."""
    if kind == "cqt":
        from .teachers import CQTTeacher

        cqt = CQTTeacher(sample_rate, n_bins=cqt_bins, bins_per_octave=cqt_bins_per_octave, log=True)
        fn = cqt  # (B, T, F)
    elif kind == "mel":
        import torchaudio

        mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=2048, hop_length=320, n_mels=128)
        fn = lambda w: torch.log(mel(w) + 1e-6).transpose(1, 2)  # noqa: E731  (B, T, 128)
    else:
        raise ValueError(f"unknown baseline feature {kind!r}; choose cqt or mel")
    out = []
    for wav, lengths in batches(clips, batch_size):
        f = fn(wav)  # (B, T, F)
        frames = (lengths // 320 + 1).clamp(max=f.shape[1])
        out.append(masked_mean(f, length_mask(frames, f.shape[1])))
    return torch.cat(out)


def linear_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, l2: float = 1e-3, steps: int = 200,
    hidden: int = 0, seed: int = 0,
) -> float:
    """Standardise on the training set, fit softmax regression (or a 1-hidden-layer MLP when
    ``hidden`` > 0) by full-batch L-BFGS, return test accuracy."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    dims = [xtr.shape[1], hidden, classes] if hidden else [xtr.shape[1], classes]
    params = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        params += [(torch.randn(a, b, generator=g) / a**0.5).requires_grad_(), torch.zeros(b, requires_grad=True)]

    def forward(x):
        for i in range(0, len(params), 2):
            x = x @ params[i] + params[i + 1]
            if i + 2 < len(params):
                x = F.gelu(x)
        return x

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(forward(xtr), train_y) + l2 * sum((p**2).sum() for p in params[::2])
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((forward(xte).argmax(1) == test_y).float().mean())

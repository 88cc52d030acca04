"""MERT's two teachers: acoustic RVQ codes (EnCodec) and the musical CQT, both on clean audio.

    RVQTeacher(wav (B, S))          -> codes (B, K, T') long, K codebooks at 75 Hz (EnCodec)
    KMeansTeacher(wav (B, S))       -> codes (B, K, T') long, k-means on log-mel frames (HuBERT iter. 1)
    CQTTeacher(wav (B, S))          -> magnitudes (B, T', 336) at 75 Hz

T' is at least the student's frame count; ``align`` trims both to the student's frames.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class CQTTeacher(nn.Module):
    """nnAudio's CQT with MERT's settings: 24 kHz, hop 320, fmin 32.7 Hz, 336 bins, 48 per octave.

    Args:
        log: return log(magnitude + 1e-4) (a dB-like scale) instead of the magnitude.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        hop_length: int = 320,
        fmin: float = 32.7,
        n_bins: int = 336,
        bins_per_octave: int = 48,
        log: bool = False,
    ):
        super().__init__()
        from nnAudio.features.cqt import CQT1992v2

        top = fmin * 2 ** (n_bins / bins_per_octave)
        if top >= sample_rate / 2:
            raise ValueError(f"CQTTeacher: {n_bins} bins from {fmin} Hz at {bins_per_octave}/octave reach "
                             f"{top:.0f} Hz, above the Nyquist frequency {sample_rate / 2:.0f} Hz")
        self.n_bins, self.hop_length, self.log = n_bins, hop_length, log
        self.cqt = CQT1992v2(
            sr=sample_rate, hop_length=hop_length, fmin=fmin, n_bins=n_bins, bins_per_octave=bins_per_octave,
            window="hann", center=True, pad_mode="constant", output_format="Magnitude", verbose=False,
        )
        # the kernels (hundreds of MB at 336 bins) are rebuilt from the settings: keep them out of checkpoints
        for name in list(self.cqt._buffers):
            self.cqt._non_persistent_buffers_set.add(name)

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        mag = self.cqt(wav.float())  # (B, n_bins, S // hop + 1)
        mag = mag.transpose(1, 2)  # (B, T', n_bins)
        return torch.log(mag + 1e-4) if self.log else mag


def _model_type(folder: Path) -> str | None:
    """The ``model_type`` of an HF folder's config.json (None without one)."""
    import json

    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


class RVQTeacher(nn.Module):
    """EnCodec's residual vector quantiser codes from transformers' ``EncodecModel``.

    Built from a config (trainable, or with codebooks fitted by residual k-means on the
    user's audio: ``fit_codebooks``), or loaded from a local EnCodec folder (``init_from``;
    ``facebook/encodec_24khz`` gives MERT's 8 x 1024 codes at 75 Hz with bandwidth 6.0).

    Args:
        num_codebooks: codebooks used (K); MERT: 8.
        codebook_size: entries per codebook; MERT: 1024.
        num_filters, hidden_size, num_lstm_layers: width of the small conv encoder.
        init_from: a local folder with an EnCodec config.json + weights; overrides the sizes.
        sample_rate: must match the student's rate.
    """

    def __init__(
        self,
        num_codebooks: int = 8,
        codebook_size: int = 1024,
        num_filters: int = 32,
        hidden_size: int = 128,
        num_lstm_layers: int = 2,
        init_from: str | None = None,
        sample_rate: int = 24000,
    ):
        super().__init__()
        from transformers import EncodecConfig, EncodecModel

        if init_from is not None:
            if not Path(init_from).expanduser().is_dir():
                raise FileNotFoundError(f"RVQTeacher: init_from={init_from!r} is not a local folder; give an EnCodec "
                                        "folder (config.json + weights), e.g. the <run>/encodec an rvq_tiny run wrote")
            folder = Path(init_from).expanduser()
            kind = _model_type(folder)
            if kind != "encodec":
                raise ValueError(f"RVQTeacher: init_from={init_from!r} holds a {kind or 'config.json-less'} model, "
                                 "not EnCodec; give an EnCodec folder (config.json model_type 'encodec')")
            self.model = EncodecModel.from_pretrained(str(folder), local_files_only=True)
        else:
            config = EncodecConfig(
                sampling_rate=sample_rate, audio_channels=1, num_filters=num_filters, hidden_size=hidden_size,
                codebook_size=codebook_size, upsampling_ratios=[8, 5, 4, 2], num_lstm_layers=num_lstm_layers,
                normalize=False, use_causal_conv=True,
            )
            bits = int(torch.tensor(codebook_size).log2().ceil())
            config.target_bandwidths = [num_codebooks * bits * config.frame_rate / 1000]
            self.model = EncodecModel(config)
        cfg = self.model.config
        if cfg.sampling_rate != sample_rate:
            raise ValueError(f"RVQTeacher: the EnCodec model runs at {cfg.sampling_rate} Hz, the student at {sample_rate}")
        bits = int(torch.tensor(cfg.codebook_size).log2().ceil())
        self.bandwidth = num_codebooks * bits * cfg.frame_rate / 1000  # kbps giving num_codebooks
        self.num_codebooks, self.codebook_size = num_codebooks, cfg.codebook_size
        if num_codebooks > len(self.model.quantizer.layers):
            raise ValueError(f"RVQTeacher: asked for {num_codebooks} codebooks, the model has "
                             f"{len(self.model.quantizer.layers)}")
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):  # a frozen teacher stays in eval mode
        return super().train(False)

    @property
    def fitted(self) -> bool:
        """False while every codebook entry is zero (a fresh config): fit_codebooks first."""
        return bool(self.model.quantizer.layers[0].codebook.embed.abs().sum() > 0)

    @torch.no_grad()
    def embed(self, wav: Tensor) -> Tensor:
        """(B, S) -> (B, T', D) the encoder's continuous frames."""
        return self.model.encoder(wav[:, None].float()).transpose(1, 2)

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        """(B, S) waveforms -> (B, K, T') long codes."""
        emb = self.model.encoder(wav[:, None].float())  # (B, D, T')
        codes = self.model.quantizer.encode(emb, self.bandwidth)  # (K, B, T')
        return codes[: self.num_codebooks].transpose(0, 1).long()

    def codebook_buffers(self) -> list[Tensor]:
        """The buffers ``fit_codebooks`` writes (copied from rank 0 to every rank)."""
        return list(self.model.quantizer.buffers())

    @torch.no_grad()
    def fit_codebooks(self, frames: Tensor, iters: int = 10, seed: int = 0) -> list[float]:
        """Residual k-means on (N, D) encoder frames, level by level (EnCodec's k-means init).

        Returns the mean squared residual after each level.
        """
        layers = self.model.quantizer.layers[: self.num_codebooks]
        centers, errors = residual_kmeans(frames, [layer.codebook.embed.shape[0] for layer in layers], iters, seed)
        for layer, c in zip(layers, centers, strict=True):
            cb = layer.codebook
            cb.embed.copy_(c)
            cb.embed_avg.copy_(c)
            cb.cluster_size.fill_(1.0)
            if hasattr(cb, "inited"):
                cb.inited.fill_(True)
        return errors


class KMeansTeacher(nn.Module):
    """Acoustic codes by residual k-means on standardised log-mel frames (HuBERT's first-iteration
    teacher, which MERT-v0 used before EnCodec): a meaningful acoustic target when no trained
    EnCodec is at hand (a *random* EnCodec encoder's codes mostly encode phase and loudness).

    Same interface as ``RVQTeacher``: ``fit_codebooks`` on frames from ``embed``, then
    ``forward(wav (B, S)) -> codes (B, K, T')`` at hop 320 (75 Hz at 24 kHz).

    ``features="cqt"`` clusters log-CQT frames (``cqt_bins`` from 32.7 Hz at ``cqt_bins_per_octave``)
    instead: semitone-resolved codes, where log-mel's low bands are wider than a semitone.
    """

    def __init__(
        self,
        num_codebooks: int = 1,
        codebook_size: int = 100,
        n_mels: int = 80,
        n_fft: int = 1024,
        hop_length: int = 320,
        sample_rate: int = 24000,
        features: str = "mel",
        cqt_bins: int = 84,
        cqt_bins_per_octave: int = 12,
    ):
        super().__init__()
        import torchaudio

        if features not in ("mel", "cqt"):
            raise ValueError(f"KMeansTeacher: features must be 'mel' or 'cqt', got {features!r}")
        self.num_codebooks, self.codebook_size, self.features = num_codebooks, codebook_size, features
        if features == "cqt":
            self.cqt = CQTTeacher(sample_rate, hop_length, n_bins=cqt_bins, bins_per_octave=cqt_bins_per_octave, log=True)
            dim = cqt_bins
        else:
            self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                            n_mels=n_mels, center=True)
            for m in self.mel.modules():  # window and filterbank are rebuilt from the settings
                m._non_persistent_buffers_set.update(m._buffers)
            dim = n_mels
        self.register_buffer("centers", torch.zeros(num_codebooks, codebook_size, dim))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def train(self, mode: bool = True):  # a frozen teacher stays in eval mode
        return super().train(False)

    @property
    def fitted(self) -> bool:
        return bool(self.centers.abs().sum() > 0)

    def codebook_buffers(self) -> list[Tensor]:
        return [self.centers, self.mean, self.std]

    @torch.no_grad()
    def embed(self, wav: Tensor) -> Tensor:
        """(B, S) -> (B, T', F) log-mel (or log-CQT) frames (not standardised)."""
        if self.features == "cqt":
            return self.cqt(wav.float())  # (B, T', cqt_bins)
        return torch.log(self.mel(wav.float()) + 1e-6).transpose(1, 2)

    @torch.no_grad()
    def fit_codebooks(self, frames: Tensor, iters: int = 10, seed: int = 0) -> list[float]:
        """Per-bin standardisation, then residual k-means on (N, n_mels) frames; MSE per level."""
        frames = frames.float()
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0).clamp(min=1e-3))
        centers, errors = residual_kmeans((frames - self.mean) / self.std, [self.codebook_size] * self.num_codebooks,
                                          iters, seed)
        self.centers.copy_(torch.stack(centers))
        return errors

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        """(B, S) waveforms -> (B, K, T') long codes."""
        if not self.fitted:
            raise RuntimeError("KMeansTeacher: codebooks are empty; call fit_codebooks first "
                               "(MERTPretraining does it at the start of fit)")
        residual = (self.embed(wav) - self.mean) / self.std  # (B, T', F)
        codes = []
        for c in self.centers:  # (V, F)
            idx = torch.cdist(residual, c[None].expand(len(residual), -1, -1)).argmin(-1)  # (B, T')
            codes.append(idx)
            residual = residual - c[idx]
        return torch.stack(codes, 1)  # (B, K, T')


@torch.no_grad()
def residual_kmeans(frames: Tensor, sizes: list[int], iters: int = 10, seed: int = 0
                    ) -> tuple[list[Tensor], list[float]]:
    """Residual k-means on (N, D) frames: one codebook of ``sizes[k]`` entries per level, each fitted
    on what the previous levels leave. Returns the codebooks and the mean squared residual per level."""
    g = torch.Generator().manual_seed(seed)
    residual = frames.float().clone()
    out, errors = [], []
    for k in sizes:
        pick = torch.randint(len(residual), (k,), generator=g)  # with replacement: N may be < k
        centers = residual[pick] + 1e-4 * torch.randn(k, residual.shape[1], generator=g)
        for _ in range(iters):
            assign = torch.cdist(residual, centers).argmin(1)  # (N,)
            sums = torch.zeros_like(centers).index_add_(0, assign, residual)
            counts = torch.bincount(assign, minlength=k).float()[:, None]
            centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
        out.append(centers)
        residual = residual - centers[torch.cdist(residual, centers).argmin(1)]
        errors.append(float(residual.pow(2).mean()))
    return out, errors


def align(student_frames: int, *targets: Tensor, dim: int = 1) -> list[Tensor]:
    """Trim teacher targets to the student's frame count along ``dim`` (MERT truncates the same way)."""
    out = []
    for t in targets:
        if t.shape[dim] < student_frames:
            raise ValueError(f"a teacher gives {t.shape[dim]} frames, fewer than the student's {student_frames}")
        out.append(t.narrow(dim, 0, student_frames))
    return out

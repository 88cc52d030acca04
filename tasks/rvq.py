"""Train a small RVQ-VAE (EnCodec layout) on a user's audio, to serve as MERT's acoustic teacher.

    tessera fit --config configs/audio/rvq_tiny.yaml --data.init_args.train /path/to/music
    # then: rvq_teacher.init_args.pretrained: <default_root_dir>/encodec   in a MERT config

The encoder, residual quantiser and decoder are transformers' ``EncodecModel`` (inside
``RVQTeacher``); transformers ships no training loss for it, so this system supplies EnCodec's
recipe without the adversarial part: residual quantisation with a straight-through estimator,
codebooks updated by exponential moving averages (k-means initialised), a commitment loss, and
L1 reconstruction of the waveform and of log-mel spectrograms at two resolutions.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchaudio

from modalities.audio.teachers import RVQTeacher


class RVQVAETraining(L.LightningModule):
    """Args:
    teacher: the RVQTeacher to train (a fresh config; k-means initialised at the start of fit).
    lr, betas: Adam.
    commitment: weight of ||z - sg(q)||^2.
    mel_weight: weight of the multi-resolution log-mel L1 (the waveform L1 has weight 1).
    ema_decay: codebook EMA decay.
    fit_codebooks_batches: training batches used for the k-means initialisation.
    """

    def __init__(
        self,
        teacher: RVQTeacher,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        commitment: float = 1.0,
        mel_weight: float = 1.0,
        ema_decay: float = 0.99,
        fit_codebooks_batches: int = 4,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["teacher"])
        self.teacher = teacher
        teacher.model.encoder.requires_grad_(True)
        teacher.model.decoder.requires_grad_(True)
        sr = teacher.model.config.sampling_rate
        self.mels = torch.nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sr, n_fft=n, hop_length=n // 4, n_mels=64) for n in (512, 2048)
        )

    def on_fit_start(self) -> None:
        t = self.teacher
        if t.fitted:
            return
        loader = self.trainer.datamodule.codebook_fit_loader(self.hparams.fit_codebooks_batches)
        frames = torch.cat([t.embed(b["input_values"].to(self.device)).flatten(0, 1).cpu() for b in loader])
        t.fit_codebooks(frames)
        for buf in t.model.quantizer.buffers():
            buf.copy_(self.trainer.strategy.broadcast(buf.detach().cpu(), src=0).to(buf.device))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, D, T) -> straight-through quantised (B, D, T), commitment loss, codes (K, B, T)."""
        residual = z.transpose(1, 2)  # (B, T, D)
        total = torch.zeros_like(residual)
        commit = z.new_zeros(())
        codes = []
        for layer in self.teacher.model.quantizer.layers[: self.teacher.num_codebooks]:
            cb = layer.codebook
            flat = residual.detach().flatten(0, 1)  # (N, D)
            idx = torch.cdist(flat, cb.embed).argmin(1)  # (N,)
            q = cb.embed[idx].view_as(residual)
            commit = commit + F.mse_loss(residual, q.detach())
            if self.training:  # EMA codebook update
                d = self.hparams.ema_decay
                onehot = F.one_hot(idx, cb.embed.shape[0]).type_as(flat)  # (N, V)
                cb.cluster_size.mul_(d).add_(onehot.sum(0), alpha=1 - d)
                cb.embed_avg.mul_(d).add_(onehot.t() @ flat, alpha=1 - d)
                n = cb.cluster_size.sum()
                size = (cb.cluster_size + 1e-5) / (n + cb.embed.shape[0] * 1e-5) * n
                cb.embed.copy_(cb.embed_avg / size[:, None])
            total = total + q
            residual = residual - q.detach()
            codes.append(idx.view(residual.shape[:2]))
        zq = z.transpose(1, 2) + (total - z.transpose(1, 2)).detach()  # straight-through
        return zq.transpose(1, 2), commit, torch.stack(codes)

    def forward(self, wav: torch.Tensor) -> dict:
        x = wav[:, None]  # (B, 1, S)
        z = self.teacher.model.encoder(x)  # (B, D, T)
        zq, commit, codes = self.quantize(z)
        y = self.teacher.model.decoder(zq)[..., : x.shape[-1]]  # (B, 1, S)
        wave = F.l1_loss(y, x)
        mel = sum(F.l1_loss(torch.log(m(y) + 1e-5), torch.log(m(x) + 1e-5)) for m in self.mels) / len(self.mels)
        loss = wave + self.hparams.mel_weight * mel + self.hparams.commitment * commit
        usage = codes[0].unique().numel() / self.teacher.codebook_size
        return {"loss": loss, "wave_l1": wave, "mel_l1": mel, "commitment": commit, "codebook_usage": usage}

    def training_step(self, batch, batch_idx):
        if len(batch["lengths"]) == 0:
            return None
        out = self(batch["input_values"])
        bs = len(batch["lengths"])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        for k in ("wave_l1", "mel_l1", "commitment", "codebook_usage"):
            self.log(f"train/{k}", float(out[k].detach()) if torch.is_tensor(out[k]) else out[k], batch_size=bs)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        if len(batch["lengths"]) == 0:
            return
        out = self(batch["input_values"])
        for k in ("loss", "wave_l1", "mel_l1"):
            self.log(f"val/{k}", out[k], batch_size=len(batch["lengths"]), prog_bar=k == "loss")

    def on_train_end(self) -> None:
        """Write the trained EnCodec as an HF folder: RVQTeacher(pretrained=<root>/encodec) loads it."""
        if self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir) / "encodec"
            self.teacher.model.save_pretrained(out)
            self.print(f"RVQ-VAE teacher written to {out}")

    def configure_optimizers(self):
        params = [p for p in self.teacher.model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))

"""Audio (music) training systems.

``MERTPretraining``: MERT pretraining, predict the RVQ codes and the CQT of masked frames from noisy audio.
``RVQVAETraining``: a small RVQ-VAE (EnCodec layout) trained on a user's audio, to serve as MERT's
acoustic teacher when no trained EnCodec is at hand.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchaudio
from torchmetrics import MeanMetric

from modalities.audio import AudioEncoder
from modalities.audio.heads import MERTHeads
from modalities.audio.io import normalize
from modalities.audio.masking import length_mask, noise_mixture, span_mask
from modalities.audio.teachers import CQTTeacher, KMeansTeacher, RVQTeacher, align

from .data.collate import seeded_generator
from .optim import PretrainingHooks


class MERTPretraining(PretrainingHooks, L.LightningModule):
    """Encoder, frozen teachers and heads are injected (see configs/audio/*.yaml).

    Batches: ``input_values`` (B, S) raw clean waveforms at the encoder's rate, right-padded,
    and ``lengths`` (B,). Per step: teachers label the clean audio; the student hears the
    noise-mixed, normalised audio with span-masked frames; losses on masked frames only.

    Args:
        encoder: the audio encoder being pretrained.
        rvq_teacher: acoustic codes: EnCodec's RVQ (MERT-v1), or k-means on log-mel frames
            (``KMeansTeacher``, HuBERT / MERT-v0) when no trained EnCodec exists; None: CQT alone.
        cqt_teacher: CQT magnitudes (musical targets); None to train on codes alone.
        final_dim: HuBERT projection size per codebook (MERT: 64 for 95M, 128 for 330M).
        logit_temp: temperature of the cosine-similarity logits (MERT: 0.1).
        rvq_weight, cqt_weight: loss weights.
        unmasked_weight: weight of the same losses on the real frames that were *not* masked
            (HuBERT's ``pred_nomask_weight``; MERT and HuBERT train with 0). Above 0, the output at
            unmasked frames must also carry the targets, which frozen-feature probes read.
        mask_prob, mask_span: span masking (MERT: 0.8, 5 frames).
        noise_prob, noise_segments, noise_seconds: in-batch noise mixture (MERT: 0.5, 1-3, 0.5-1.0 s).
        fit_codebooks_batches: training batches read at the start of fit to set up the teachers:
            residual k-means codebooks when the RVQ teacher's are still empty (a fresh config), and
            the per-bin mean/std that standardise the CQT targets (MSE is on standardised targets).
        lr, weight_decay, betas, eps, warmup, schedule: Adam(W) with warmup then decay.
        frontend_lr_mult: the conv feature extractor's learning rate as a share of ``lr`` (0: it stays
            at its initial weights and gets no gradient, which also skips its backward pass). The
            tiny demo uses 0: at its budget, training the conv stack erased the pitch that the
            random conv filters expose (docs/audio.md, Results).
        seed: seeds the masks and the noise (per step, so a resumed run draws the same ones).
    """

    loss_label = "masked-frame code + CQT loss"  # the y axis of loss_curve.png

    def __init__(
        self,
        encoder: AudioEncoder,
        rvq_teacher: RVQTeacher | KMeansTeacher | None = None,
        cqt_teacher: CQTTeacher | None = None,
        final_dim: int = 64,
        logit_temp: float = 0.1,
        rvq_weight: float = 1.0,
        cqt_weight: float = 1.0,
        unmasked_weight: float = 0.0,
        mask_prob: float = 0.8,
        mask_span: int = 5,
        noise_prob: float = 0.5,
        noise_segments: tuple[int, int] = (1, 3),
        noise_seconds: tuple[float, float] = (0.5, 1.0),
        fit_codebooks_batches: int = 8,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup: float = 0.08,
        schedule: str = "linear",
        frontend_lr_mult: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if rvq_teacher is None and cqt_teacher is None:
            raise ValueError("MERTPretraining needs at least one teacher (rvq_teacher or cqt_teacher)")
        if unmasked_weight < 0:
            raise ValueError(f"unmasked_weight must be >= 0, got {unmasked_weight}")
        if frontend_lr_mult < 0:
            raise ValueError(f"frontend_lr_mult must be >= 0, got {frontend_lr_mult}")
        self.save_hyperparameters()
        self.encoder, self.rvq_teacher, self.cqt_teacher = encoder, rvq_teacher, cqt_teacher
        D = encoder.config.hidden_size
        self.heads = MERTHeads(
            D,
            num_codebooks=rvq_teacher.num_codebooks if rvq_teacher else 1,
            codebook_size=rvq_teacher.codebook_size if rvq_teacher else 1,
            final_dim=final_dim, logit_temp=logit_temp,
            cqt_bins=cqt_teacher.n_bins if cqt_teacher else 1,
            rvq_weight=rvq_weight if rvq_teacher else 0.0,
            cqt_weight=cqt_weight if cqt_teacher else 0.0,
        )
        self.skipped_files = 0  # files dropped from training batches because they failed to decode
        self.skipped_val_decode = 0  # validation files that failed to decode in the latest validation round
        self.eval_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in ("loss", "rvq_ce", "rvq_acc", "cqt_mse")})

    # ---- teachers
    def on_fit_start(self) -> None:
        """Data-dependent teacher set-up, once (both are saved in checkpoints): k-means codebooks for
        a fresh RVQ teacher, per-bin statistics that standardise the CQT targets."""
        t = self.rvq_teacher
        need_codebooks = t is not None and not t.fitted
        need_cqt_stats = self.cqt_teacher is not None and not bool(self.heads.cqt_stats_set)
        if not (need_codebooks or need_cqt_stats):
            return
        loader = self.trainer.datamodule.codebook_fit_loader(self.hparams.fit_codebooks_batches)
        hop = self.encoder.config.hop_length
        frames, cqts = [], []
        for batch in loader:
            wav, lengths = batch["input_values"].to(self.device), batch["lengths"].to(self.device)
            real = lengths // hop  # (B,) frames fully inside each clip
            if need_codebooks:
                emb = t.embed(wav)  # (B, T', D)
                frames.append(emb[length_mask(real, emb.shape[1])].cpu())
            if need_cqt_stats:
                c = self.cqt_teacher(wav)  # (B, T', bins)
                cqts.append(c[length_mask(real, c.shape[1])].cpu())
        if need_codebooks:
            errors = t.fit_codebooks(torch.cat(frames), seed=self.hparams.seed)
            self.print(f"{type(t).__name__}: fitted {t.num_codebooks} codebooks x {t.codebook_size} by residual k-means "
                       f"on {sum(len(f) for f in frames)} frames; residual MSE per level {[f'{e:.3g}' for e in errors]}")
        if need_cqt_stats:
            self.heads.set_cqt_stats(torch.cat(cqts).to(self.device))
        # every rank uses rank 0's codebooks and statistics
        shared = t.codebook_buffers() if need_codebooks else []
        shared += [self.heads.cqt_mean, self.heads.cqt_std, self.heads.cqt_stats_set]
        for buf in shared:
            buf.copy_(self.trainer.strategy.broadcast(buf.detach().cpu(), src=0).to(buf.device))

    @torch.no_grad()
    def targets(self, wav: torch.Tensor, frames: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Clean waveforms (B, S) -> codes (B, T, K) and CQT (B, T, bins), aligned to the student's T frames."""
        with torch.autocast(device_type=wav.device.type, enabled=False):  # teachers stay in fp32
            codes = self.rvq_teacher(wav) if self.rvq_teacher is not None else None  # (B, K, T')
            cqt = self.cqt_teacher(wav) if self.cqt_teacher is not None else None  # (B, T', bins)
        if codes is not None:
            (codes,) = align(frames, codes, dim=2)
            codes = codes.transpose(1, 2)  # (B, T, K)
        if cqt is not None:
            (cqt,) = align(frames, cqt, dim=1)
        return codes, cqt

    # ---- one step
    def forward(self, batch: dict, generator: torch.Generator | None = None, noisy: bool = True) -> dict:
        hp = self.hparams
        wav, lengths = batch["input_values"], batch["lengths"]  # (B, S), (B,)
        S = wav.shape[1]
        attn = length_mask(lengths, S)  # (B, S)
        frame_lengths = self.encoder.frontend.frame_lengths(lengths)  # (B,)
        T = self.encoder.config.num_frames(S)
        frame_mask = length_mask(frame_lengths, T)  # (B, T)
        codes, cqt = self.targets(wav, T)
        heard = wav
        if noisy and hp.noise_prob > 0:
            heard = noise_mixture(wav, lengths, self.encoder.config.sample_rate, hp.noise_prob,
                                  tuple(hp.noise_segments), tuple(hp.noise_seconds), generator)
        masked = span_mask(frame_mask.cpu(), hp.mask_prob, hp.mask_span, generator).to(wav.device) & frame_mask
        out = self.encoder(input_values=normalize(heard, lengths), attention_mask=attn, mask_time_indices=masked)
        result = self._heads_on(out.last_hidden_state, masked, codes, cqt)  # the masked frames
        result["masked_frames"] = int(masked.sum())
        if hp.unmasked_weight > 0:
            unmasked = frame_mask & ~masked
            if bool(unmasked.any()):
                other = self._heads_on(out.last_hidden_state, unmasked, codes, cqt)
                result["unmasked_loss"] = other["loss"]
                result["loss"] = result["loss"] + hp.unmasked_weight * other["loss"]
        return result

    def _heads_on(self, hidden, frames, codes, cqt) -> dict:
        """The heads' losses on the selected (B, T) frames of the student's output (B, T, D)."""
        return self.heads(hidden[frames], codes[frames] if codes is not None else None,
                          cqt[frames] if cqt is not None else None)

    def training_step(self, batch, batch_idx):
        self.skipped_files += len(batch.get("skipped", ()))
        if len(batch["lengths"]) == 0:  # every file of this batch failed to decode: skip the step
            return None
        g = seeded_generator(self.hparams.seed, self.global_step, self.global_rank)
        out = self(batch, g, noisy=True)
        bs = batch["input_values"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        for k in ("rvq_ce", "rvq_acc", "cqt_mse", "unmasked_loss"):
            if k in out:
                self.log(f"train/{k}", out[k], batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        self.log("train/skipped_files", float(self.skipped_files), batch_size=bs)
        self.log("train/skipped_setup_files", float(setup_skips(self, "train")), batch_size=bs)
        # validation files that are unusable (at setup) or failed to decode (latest round): in the train
        # history too, so metrics.json counts them even when no validation round can run
        self.log("train/skipped_val_files", float(self._skipped_val()), batch_size=bs)
        return out["loss"]

    def _skipped_val(self) -> int:
        """Validation files dropped at setup (unreadable header, too short) + in the latest round (decode)."""
        return setup_skips(self, "val") + self.skipped_val_decode

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # the count survives a resume
        checkpoint["tessera_skipped_files"] = self.skipped_files

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_files = int(checkpoint.get("tessera_skipped_files", 0))

    def on_validation_epoch_start(self) -> None:
        self.skipped_val_decode = 0

    def validation_step(self, batch, batch_idx):
        if not self.trainer.sanity_checking:
            self.skipped_val_decode += len(batch.get("skipped", ()))
        if len(batch["lengths"]) == 0:
            return
        g = seeded_generator(self.hparams.seed, 10_000_019, batch_idx)  # the same masks every validation
        out = self(batch, g, noisy=False)
        for k, m in self.eval_metrics.items():
            if k in out:
                m.update(out[k], out["masked_frames"])

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log("val/skipped_files", float(self._skipped_val()))
            if self.skipped_val_decode:
                self.print(f"warning: {self.skipped_val_decode} validation files failed to decode this round "
                           "and were skipped (val/skipped_files in metrics.json)")
        super().on_validation_epoch_end()

    def _log_eval(self, split: str) -> None:
        for k, m in self.eval_metrics.items():
            if m.update_called:
                self.log(f"{split}/{k}", m.compute(), prog_bar=k == "loss")
            m.reset()

    def trainable(self) -> torch.nn.Module:
        return torch.nn.ModuleDict({"encoder": self.encoder, "heads": self.heads})  # teachers are frozen

    def configure_optimizers(self):
        """AdamW with warmup (``PretrainingHooks``); the conv feature extractor at ``frontend_lr_mult``
        times the learning rate, or frozen at 0."""
        from .optim import adamw, param_groups, warmup_decay

        hp = self.hparams
        if hp.frontend_lr_mult == 1.0:
            return super().configure_optimizers()
        convs = self.encoder.frontend.feature_extractor
        if hp.frontend_lr_mult == 0.0:
            convs.requires_grad_(False)
        conv_ids = {id(p) for p in convs.parameters()}
        groups = []
        for g in param_groups(self.trainable(), hp.weight_decay):
            rest = [p for p in g["params"] if id(p) not in conv_ids]
            conv = [p for p in g["params"] if id(p) in conv_ids]
            groups += [dict(g, params=rest)] + ([dict(g, params=conv, lr=hp.lr * hp.frontend_lr_mult)] if conv else [])
        opt = adamw([g for g in groups if g["params"]], hp.lr, tuple(hp.betas), hp.eps)
        total = int(self.trainer.estimated_stepping_batches)
        warmup_steps = int(hp.warmup * total) if hp.warmup < 1 else int(hp.warmup)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(warmup_steps, total, hp.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def setup_skips(system: L.LightningModule, split: str) -> int:
    """Files of ``split`` the audio data module dropped at setup (unreadable header, too short)."""
    dm = getattr(system.trainer, "datamodule", None) if system._trainer is not None else None
    stats = getattr(dm, "stats", {}).get(split) if dm is not None else None
    return sum(stats.skipped.values()) if stats is not None else 0


class RVQVAETraining(L.LightningModule):
    """Train a small RVQ-VAE (EnCodec layout) on a user's audio, to serve as MERT's acoustic teacher.

        tessera fit --config configs/audio/rvq_tiny.yaml --data.init_args.train /path/to/music
        # then, in a MERT config: rvq_teacher.init_args.init_from: <default_root_dir>/encodec

    The encoder, residual quantiser and decoder are transformers' ``EncodecModel`` (inside
    ``RVQTeacher``); transformers ships no training loss for it, so this system supplies EnCodec's
    recipe without the adversarial part: residual quantisation with a straight-through estimator,
    codebooks updated by exponential moving averages (k-means initialised), a commitment loss, and
    L1 reconstruction of the waveform and of log-mel spectrograms at two resolutions.

    Args:
    teacher: the RVQTeacher to train (a fresh config; k-means initialised at the start of fit).
    lr, betas: Adam.
    commitment: weight of ||z - sg(q)||^2.
    mel_weight: weight of the multi-resolution log-mel L1 (the waveform L1 has weight 1).
    ema_decay: codebook EMA decay.
    fit_codebooks_batches: training batches used for the k-means initialisation.
    """

    loss_label = "reconstruction + commitment loss"  # the y axis of loss_curve.png

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
        for split in ("train", "val"):  # files dropped at setup (unreadable, too short): in metrics.json
            self.log(f"train/skipped_setup_{split}_files", float(setup_skips(self, split)), batch_size=bs)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        if len(batch["lengths"]) == 0:
            return
        out = self(batch["input_values"])
        for k in ("loss", "wave_l1", "mel_l1"):
            self.log(f"val/{k}", out[k], batch_size=len(batch["lengths"]), prog_bar=k == "loss")

    def export_encoder(self, folder, **meta):
        """An RVQ-VAE is a teacher, not an encoder: nothing goes to <log dir>/encoder (``tessera fit``
        says so); the trained EnCodec folder is written by ``on_train_end``."""
        from .jobs import UserError

        raise UserError(f"an RVQ-VAE teacher is not an encoder; its EnCodec folder is "
                        f"{Path(self.trainer.default_root_dir) / 'encodec'} (rvq_teacher.init_args.init_from)")

    def on_train_end(self) -> None:
        """Write the trained EnCodec as an HF folder: RVQTeacher(init_from=<root>/encodec) loads it."""
        if self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir) / "encodec"
            self.teacher.model.save_pretrained(out)
            self.print(f"RVQ-VAE teacher written to {out}")

    def configure_optimizers(self):
        params = [p for p in self.teacher.model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))

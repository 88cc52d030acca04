"""Lightning systems for the CXR towers (LLM2Vec's recipe, then LLM2CLIP):

- ``CausalLMSystem``: causal-LM pretraining of the decoder (the stand-in for a pretrained LLM).
- ``MNTPSystem``: masked next-token prediction on a bidirectional decoder; a masked token i is
  predicted from the output at position i-1 (the decoder's own LM-head alignment).
- ``ContrastiveTextSystem``: unsupervised SimCSE (the same report twice, dropout as the only
  augmentation) or supervised contrastive on (findings, impression) pairs; validation is
  findings -> impression retrieval on the validation reports (Recall@1/5/10).
- ``CLIPSystem``: image tower + text tower with open_clip's ``ClipLoss`` or ``SigLipLoss``; its
  encoder folder is the text tower, with the rest of the dual tower under ``dual_tower/``.
- ``ExportEncoder`` (``tasks.callbacks``; importable from here too): a callback writing the trained
  tower (LoRA merged) as a Tessera folder that ``load_encoder`` and the next stage's ``init_from`` read.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from modalities.cxr import LLM2VecEncoder, TextTower
from modalities.cxr.dual import DualTower
from modalities.hub import save_encoder

from .callbacks import ExportEncoder  # noqa: F401  (configs name tasks.cxr.ExportEncoder)
from .contrastive import InfoNCE, clip_loss, equal_rows
from .data.collate import IGNORE
from .data.spec import require_vocab, spec_of
from .metrics.retrieval import retrieval_recall, retrieval_recall_any
from .optim import build_optimizer


def export_tower(module: nn.Module, folder: str | Path, **meta) -> Path:
    """Write a text tower as a Tessera folder (LLM2Vec: LoRA merged, the adapter also saved in
    peft's layout under ``adapter/``; TextTower: its encoder, pooling in the metadata)."""
    folder = Path(folder)
    if isinstance(module, LLM2VecEncoder):
        if module.has_lora:
            module.save_adapter(folder / "adapter")
            module.merge_lora()  # training is over: fold the adapters in
        return save_encoder(module, folder, meta={"pooling": module.config.pooling, **meta})
    if isinstance(module, TextTower):
        return save_encoder(module.encoder, folder, meta={"pooling": module.pooling, **meta})
    return save_encoder(module, folder, meta=meta)


class _Optimised(L.LightningModule):
    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self, hp.lr, hp.weight_decay, tuple(hp.betas), hp.eps, hp.warmup,
                               int(self.trainer.estimated_stepping_batches), hp.schedule)

    def export_encoder(self, folder: str | Path, **meta) -> Path:
        """The trained text tower (a contrastive system's ``tower``, an LLM2Vec stage's ``encoder``)."""
        module = getattr(self, "tower", None) or self.encoder
        return export_tower(module, folder, **meta)


class MNTPSystem(_Optimised):
    """LLM2Vec step 1. Batches: masked ``input_ids`` (B, T), ``attention_mask``, ``labels`` (-100
    off the masked positions). Loss: cross-entropy of logits at i-1 against the token at i.

    Args:
        encoder: an ``LLM2VecEncoder`` (bidirectional; with LoRA only the adapters train).
        lr, weight_decay, betas, eps, warmup, schedule: AdamW and its schedule (tasks/optim.py).
    """

    loss_label = "masked next-token cross-entropy"  # the y axis of loss_curve.png

    def __init__(self, encoder: LLM2VecEncoder, lr: float = 5e-5, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, warmup: float = 0.1,
                 schedule: str = "linear"):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = encoder
        if encoder.has_lora and encoder.lm_head is not None:
            encoder.lm_head.requires_grad_(False)  # LLM2Vec: only the adapters train
        self.eval_loss, self.eval_acc = MeanMetric(), MeanMetric()

    def setup(self, stage: str) -> None:
        require_vocab(spec_of(self.trainer), self.encoder.base().config.vocab_size,
                      "model.init_args.encoder.init_args.config.decoder.vocab_size")

    def forward(self, input_ids, attention_mask, labels) -> dict:
        h = self.encoder(input_ids, attention_mask).last_hidden_state  # (B, T, D)
        prev, target = h[:, :-1], labels[:, 1:]  # output i-1 predicts token i
        chosen = target != IGNORE  # (B, T-1)
        logits = self.encoder.lm_logits(prev[chosen])  # (M, V)
        loss = F.cross_entropy(logits.float(), target[chosen])
        return {"loss": loss, "accuracy": (logits.argmax(-1) == target[chosen]).float().mean(),
                "masked": int(chosen.sum())}

    def training_step(self, batch, batch_idx):
        out = self(batch["input_ids"], batch["attention_mask"], batch["labels"])
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train/accuracy", out["accuracy"], batch_size=bs)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self(batch["input_ids"], batch["attention_mask"], batch["labels"])
        self.eval_loss.update(out["loss"], out["masked"])
        self.eval_acc.update(out["accuracy"], out["masked"])

    def on_validation_epoch_end(self):
        loss = self.eval_loss.compute()
        self.log_dict({"val/loss": loss, "val/accuracy": self.eval_acc.compute(), "val/perplexity": loss.exp()},
                      prog_bar=True)
        self.eval_loss.reset()
        self.eval_acc.reset()


class CausalLMSystem(MNTPSystem):
    """Causal-LM pretraining of the decoder (what an LLM is before LLM2Vec): the encoder's
    attention is made causal, every real token is predicted from the output one step before
    (batches from ``ReportDataModule`` mode "causal"). The export is the starting point of the
    LLM2Vec steps (``MNTPSystem`` with ``init_from``, bidirectional again).

    Args: as ``MNTPSystem``.
    """

    loss_label = "next-token cross-entropy"  # the y axis of loss_curve.png

    def __init__(self, encoder: LLM2VecEncoder, lr: float = 5e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, warmup: float = 0.1,
                 schedule: str = "linear"):
        super().__init__(encoder, lr, weight_decay, betas, eps, warmup, schedule)
        encoder.set_bidirectional(False)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        mode = getattr(getattr(self.trainer, "datamodule", None), "mode", None)
        if mode not in (None, "causal"):
            raise ValueError(f"CausalLMSystem needs ReportDataModule mode 'causal' (every token a label), got {mode!r}")


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, group: torch.Tensor | None = None) -> torch.Tensor:
    """Single-process ``InfoNCE``: row i of ``a`` should match row i of ``b`` among all rows of ``b``;
    rows of ``b`` in the same ``group`` as the positive are not negatives."""
    return InfoNCE(temperature)(a, b, group)


class ContrastiveTextSystem(_Optimised):
    """LLM2Vec step 2 (unsupervised SimCSE) or 3 (supervised, report pairs).

    Args:
        tower: a text tower with ``encode(ids, mask) -> (B, D)`` (``LLM2VecEncoder`` or ``TextTower``).
        supervised: False: SimCSE on ``input_ids`` twice; True: ``input_ids`` (findings) against
            ``pair_ids`` (impression), other reports with the same impression masked out.
        temperature: InfoNCE temperature (SimCSE / LLM2Vec: 0.05).

    Under DDP the keys of every rank are gathered (with gradient) and each rank scores its own
    queries against all of them (``tasks.contrastive.InfoNCE``): the negatives and the update are
    those of the global batch.
    """

    loss_label = "contrastive (InfoNCE) loss"  # the y axis of loss_curve.png

    def __init__(self, tower: nn.Module, supervised: bool = False, temperature: float = 0.05, lr: float = 3e-5,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 warmup: float = 0.1, schedule: str = "linear"):
        super().__init__()
        self.save_hyperparameters()
        self.tower = tower
        self.loss_fn = InfoNCE(temperature)  # rebuilt in setup() for the process group
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: str) -> None:
        self.loss_fn = InfoNCE(self.hparams.temperature, rank=self.global_rank, world_size=self.trainer.world_size)

    def training_step(self, batch, batch_idx):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        z1 = self.tower.encode(ids, mask)
        if self.hparams.supervised:
            z2, group = self.tower.encode(batch["pair_ids"], batch["pair_mask"]), batch["group"]
        else:
            z2, group = self.tower.encode(ids, mask), None  # a second pass: other dropout masks
        loss = self.loss_fn(z1, z2, group)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(ids))
        return loss

    def validation_step(self, batch, batch_idx):
        if "pair_ids" not in batch:
            raise ValueError("validation needs (findings, impression) pairs: use ReportDataModule mode 'plain' or 'pairs'")
        zf = self.tower.encode(batch["input_ids"], batch["attention_mask"])
        zi = self.tower.encode(batch["pair_ids"], batch["pair_mask"])
        self._val.append((zf.float().cpu(), zi.float().cpu(), batch["group"].cpu()))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        zf, zi, group = (torch.cat(x) for x in zip(*self._val, strict=True))
        self._val.clear()
        reps = torch.zeros(int(group.max()) + 1, dtype=torch.long)  # groups are numbered by first appearance
        reps[group.flip(0)] = torch.arange(len(group) - 1, -1, -1)
        r = retrieval_recall(zf, zi[reps], group)
        self.log_dict({"val/loss": info_nce(zf, zi, self.hparams.temperature, group),
                       **{f"val/{k}": v for k, v in r.items() if k.startswith("recall") or k == "mrr"}},
                      prog_bar=True)


class CLIPSystem(_Optimised):
    """Image-report contrastive training with open_clip's losses (LLM2CLIP when the text tower is frozen).

    Batches: ``images`` (B, 1, H, W), ``input_ids`` / ``attention_mask`` of the report text.

    Args:
        model: a ``DualTower``.
        loss: "clip" (``open_clip.loss.ClipLoss``) or "siglip" (``open_clip.loss.SigLipLoss``;
            give the model ``init_logit_bias=-10`` and ``init_logit_scale=log(10)``). Under DDP
            both see the global batch (``tasks.contrastive.clip_loss``), which needs the same batch
            size on every rank: a rank whose batch lost images to decoding errors sets the size
            for that step (``tasks.contrastive.equal_rows``). A rank whose whole batch failed
            skips the step, which a multi-process run cannot do: keep the batch size well above
            the failure rate there.
    """

    loss_label = "image-report contrastive loss"  # the y axis of loss_curve.png

    def __init__(self, model: DualTower, loss: str = "clip", lr: float = 1e-3, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6, warmup: float = 0.1,
                 schedule: str = "cosine"):
        super().__init__()
        if loss not in ("clip", "siglip"):
            raise ValueError(f"loss {loss!r} is not 'clip' or 'siglip'")
        if loss == "siglip" and model.logit_bias is None:
            raise ValueError("SigLIP needs a logit bias: build the DualTower with init_logit_bias (e.g. -10)")
        self.save_hyperparameters()
        self.model = model
        self.loss_fn = clip_loss(loss)  # rebuilt in setup() for the process group
        self.eval_loss_fn = clip_loss(loss)  # validation features are scored where they are gathered
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: str) -> None:
        self.loss_fn = clip_loss(self.hparams.loss, rank=self.global_rank, world_size=self.trainer.world_size)

    def export_encoder(self, folder: str | Path, **meta) -> Path:
        """The encoder folder of a dual tower: its text tower (a text encoder folder that ``tessera
        embed`` and a text stage's ``init_from`` read; LLM2Vec LoRA merged), and the image tower,
        adapter, projections and logit scale under ``dual_tower/`` (``modalities.cxr.load_dual_tower``
        rebuilds the whole; ``tessera eval cxr-clip`` takes the folder)."""
        from modalities.cxr.dual import DUAL_DIR, save_dual_tower

        out = export_tower(self.model.text_tower, folder, dual_tower=DUAL_DIR, **meta)
        save_dual_tower(self.model, out)
        return out

    def training_step(self, batch, batch_idx):
        if not batch:  # every image of the batch failed to decode (counted by the data module)
            return None
        out = self.model(batch["images"], batch["input_ids"], batch["attention_mask"])
        if self.trainer.world_size > 1:
            out["image_features"], out["text_features"] = equal_rows(out["image_features"], out["text_features"])
        loss = self.loss_fn(**out)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["images"]))
        self.log("train/logit_scale", out["logit_scale"], batch_size=len(batch["images"]))
        return loss

    def validation_step(self, batch, batch_idx):
        if not batch:
            return
        out = self.model(batch["images"], batch["input_ids"], batch["attention_mask"])
        self._val.append((out["image_features"].float().cpu(), out["text_features"].float().cpu(), batch["group"].cpu()))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        zi, zt, group = (torch.cat(x) for x in zip(*self._val, strict=True))
        self._val.clear()
        reps = torch.zeros(int(group.max()) + 1, dtype=torch.long)
        reps[group.flip(0)] = torch.arange(len(group) - 1, -1, -1)
        i2t = retrieval_recall(zi, zt[reps], group)  # image -> report (reports of one group are one entry)
        t2i = retrieval_recall_any(zt[reps], zi, group[None, :] == torch.arange(len(reps))[:, None])  # text -> an image of it
        metrics = {f"val/i2t_{k}": v for k, v in i2t.items() if k.startswith("recall")}
        metrics.update({f"val/t2i_{k}": v for k, v in t2i.items() if k.startswith("recall")})
        scale = self.model.logit_scale.exp().clamp(max=100.0)
        bias = {"logit_bias": self.model.logit_bias} if self.model.logit_bias is not None else {}
        metrics["val/loss"] = self.eval_loss_fn(zi.to(scale.device), zt.to(scale.device), scale, **bias)
        self.log_dict(metrics, prog_bar=True)

"""Masked-token pretraining of any token encoder (MosaicBERT's recipe)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from modalities.backbone import MaskedLMHead, TokenEncoder

from .data.collate import IGNORE
from .data.spec import require_vocab, spec_of
from .optim import PretrainingHooks


class MaskedLMSystem(PretrainingHooks, L.LightningModule):
    """Encoder in, MLM head (decoder tied to the input embeddings) on top.

    Batches: ``input_ids`` (B, T) already masked, ``attention_mask`` (B, T), ``labels`` (B, T)
    with -100 off the masked positions. Only the masked positions reach the decoder.

    Args:
        encoder: the token encoder being pretrained (injected; see configs/text/*.yaml).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not on biases and norms).
        betas: AdamW betas (MosaicBERT: 0.9, 0.98).
        eps: AdamW epsilon.
        warmup: warmup steps, or a fraction of the total steps when < 1.
        schedule: decay after warmup: linear | cosine | constant.
    """

    loss_label = "masked-token cross-entropy"  # the y axis of loss_curve.png

    def __init__(
        self,
        encoder: TokenEncoder,
        lr: float = 5e-4,
        weight_decay: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup: float = 0.06,
        schedule: str = "linear",
    ):
        super().__init__()
        # under LightningCLI the encoder is saved as its class_path/init_args config, so
        # MaskedLMSystem.load_from_checkpoint rebuilds it
        self.save_hyperparameters()
        self.encoder = encoder
        cfg = encoder.config
        self.head = MaskedLMHead(cfg.hidden_size, encoder.embeddings, cfg.activation, cfg.layer_norm_eps)
        self.eval_loss = MeanMetric()  # token-weighted over an evaluation epoch
        self.eval_acc = MeanMetric()

    def setup(self, stage: str) -> None:
        require_vocab(spec_of(self.trainer), self.encoder.config.vocab_size,
                      "model.init_args.encoder.init_args.config.vocab_size")

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        chosen = labels != IGNORE  # (B, T)
        logits = self.head(hidden[chosen])  # (M, V): the decoder runs on masked positions only
        targets = labels[chosen]  # (M,)
        loss = F.cross_entropy(logits.float(), targets)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return {"loss": loss, "accuracy": accuracy, "masked": targets.numel()}

    def training_step(self, batch, batch_idx):
        out = self(batch["input_ids"], batch["attention_mask"], batch["labels"])
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train/accuracy", out["accuracy"], batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self(batch["input_ids"], batch["attention_mask"], batch["labels"])
        self.eval_loss.update(out["loss"], out["masked"])
        self.eval_acc.update(out["accuracy"], out["masked"])

    test_step = validation_step

    def _log_eval(self, split: str) -> None:
        loss = self.eval_loss.compute()  # MeanMetric syncs across processes
        self.log_dict(
            {f"{split}/loss": loss, f"{split}/accuracy": self.eval_acc.compute(), f"{split}/perplexity": torch.exp(loss)},
            prog_bar=split == "val",
        )
        self.eval_loss.reset()
        self.eval_acc.reset()


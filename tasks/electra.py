"""ELECTRA pretraining (replaced-token detection) of any token encoder, on the masked-LM batches
every token data module already yields (text, code; ``modalities.backbone.electra`` is the model).

The data module chooses the positions (its ``mask_ratio``: 0.15 in the ELECTRA configs, the
paper's); the generator reads the original sequence with [MASK] at every chosen position (the
paper's masking: the data module's 10 % random / 10 % kept tokens become [MASK] here too), and the
discriminator reads the generator's samples there. At the end of fit the discriminator is exported
as an ordinary encoder folder (``export_encoder``), the tokenizer beside it.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchmetrics import MeanMetric

from modalities.backbone import TokenEncoder
from modalities.backbone.electra import ElectraModel

from .data.collate import IGNORE
from .data.spec import require_vocab, spec_of
from .optim import PretrainingHooks


class ElectraSystem(PretrainingHooks, L.LightningModule):
    """Generator (masked LM) + discriminator (replaced-token detection) over one shared frontend.

    Batches: ``input_ids`` (B, T) masked by the data module, ``attention_mask`` (B, T), ``labels``
    (B, T) with the original ids at the chosen positions and -100 elsewhere.

    Args:
        encoder: the discriminator, the encoder being pretrained and exported (injected).
        generator_fraction: the generator's width as a fraction of the discriminator's (paper: 1/4 - 1/3).
        generator_layers: the generator's depth (None: the discriminator's).
        rtd_weight: lambda, the replaced-token loss weight (paper: 50).
        temperature: of the generator's softmax when sampling replacements.
        rtd_prior: the replaced share the discriminator head starts at (its output bias; the data
            module's mask ratio; None: 1/2, which collapses the token states, see DiscriminatorHead).
        mask_token_id: the [MASK] id the generator reads; None: the data module's.
        lr, weight_decay, betas, eps, warmup, schedule: AdamW and its schedule (MaskedLMSystem's defaults, so
            that the two objectives compare with one optimiser).
    """

    loss_label = "MLM + 50 x replaced-token loss"  # the y axis of loss_curve.png

    def __init__(
        self,
        encoder: TokenEncoder,
        generator_fraction: float = 0.25,
        generator_layers: int | None = None,
        rtd_weight: float = 50.0,
        temperature: float = 1.0,
        rtd_prior: float | None = 0.15,
        mask_token_id: int | None = None,
        lr: float = 5e-4,
        weight_decay: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup: float = 0.06,
        schedule: str = "linear",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = ElectraModel(encoder, generator_fraction, generator_layers, rtd_weight, temperature, rtd_prior)
        self.mask_token_id = mask_token_id
        self.eval_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in
                                                 ("loss", "mlm_loss", "rtd_loss", "generator_accuracy", "rtd_accuracy", "replaced_share")})
        self.flops = 0.0  # analytic training FLOPs so far (ElectraModel.training_flops), logged as train/flops

    @property
    def encoder(self) -> TokenEncoder:
        """The discriminator: what fine-tuning, ``tessera embed`` and ``init_from`` take."""
        return self.model.discriminator

    def setup(self, stage: str) -> None:
        require_vocab(spec_of(self.trainer), self.encoder.config.vocab_size,
                      "model.init_args.encoder.init_args.config.vocab_size")
        if self.mask_token_id is None:
            spec = spec_of(self.trainer)
            self.mask_token_id = spec.mask_token_id if spec is not None else None
        if self.mask_token_id is None:
            raise ValueError("ElectraSystem needs the [MASK] id: set model.init_args.mask_token_id, or use a data "
                             "module with mask_token_id (the masked text / code data modules)")

    def forward(self, batch, generator: torch.Generator | None = None) -> dict:
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
        masked = labels != IGNORE  # (B, T)
        original = torch.where(masked, labels, ids)  # (B, T): the data module's random / kept tokens undone
        generator_input = original.masked_fill(masked, self.mask_token_id)
        return self.model(generator_input, original, masked, mask, batch.get("token_type_ids"), generator)

    def training_step(self, batch, batch_idx):
        out = self(batch)
        bs = batch["input_ids"].shape[0]
        self.flops += self.model.training_flops(batch["attention_mask"].sum(1).cpu(), out["masked"])
        for k in ("loss", "mlm_loss", "rtd_loss", "generator_accuracy", "rtd_accuracy", "replaced_share"):
            self.log(f"train/{k}", out[k], prog_bar=k == "loss", batch_size=bs)
        self.log("train/flops", self.flops, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        # replacements drawn with a generator seeded by the batch: the same samples every validation
        seeded = torch.Generator(device=batch["input_ids"].device).manual_seed(batch_idx)
        out = self(batch, generator=seeded)
        for k, m in self.eval_metrics.items():
            m.update(out[k], out["tokens"] if k.startswith("rtd") or k == "replaced_share" else out["masked"])

    test_step = validation_step

    def _log_eval(self, split: str) -> None:
        self.log_dict({f"{split}/{k}": m.compute() for k, m in self.eval_metrics.items()}, prog_bar=split == "val")
        for m in self.eval_metrics.values():
            m.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["electra_flops"] = self.flops

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.flops = float(checkpoint.get("electra_flops", 0.0))

    def export_encoder(self, folder: str | Path, **meta) -> Path:
        """The discriminator as an ordinary encoder folder (config.json + model.safetensors)."""
        from modalities.hub import save_encoder

        g = self.model.generator_config
        meta.setdefault("pretraining", "electra")
        meta.setdefault("generator", {"hidden_size": g.hidden_size, "num_layers": g.num_layers,
                                      "num_heads": g.num_heads, "intermediate_size": g.intermediate_size})
        if self.flops:  # counted in this process (a system rebuilt by load_system has not trained)
            meta.setdefault("training_flops", self.flops)
        return save_encoder(self.encoder, folder, meta=meta)

"""BERT4Rec as a Lightning system: cloze training, leave-one-out evaluation under both
protocols in use (full ranking, and the paper's 100 popularity-sampled negatives), with a
MostPopular floor computed on the same candidates."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from modalities.recsys import BERT4Rec

from .data.collate import IGNORE
from .data.spec import spec_of
from .metrics.ranking import check_negatives, leave_one_out_ranks, ranking_metrics
from .optim import build_optimizer


class BERT4RecSystem(L.LightningModule):
    """Args:
        model: the BERT4Rec network (injected; ``num_items`` must match the data).
        lr, weight_decay, warmup, schedule: AdamW and its schedule (paper: 1e-4, 0.01, 100 steps, linear).
        negatives: popularity-sampled negatives per user for the sampled protocol (paper: 100).
        eval_seed: seeds the negative sampling, so every evaluation uses the same candidates.
    """

    loss_label = "masked-item cross-entropy"  # the y axis of loss_curve.png

    def __init__(
        self,
        model: BERT4Rec,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup: float = 100,
        schedule: str = "linear",
        negatives: int = 100,
        eval_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = model
        self._ranks: dict[str, list[torch.Tensor]] = {}

    def setup(self, stage: str) -> None:
        spec = spec_of(self.trainer)
        if spec is not None and spec.num_items is not None and spec.num_items != self.model.config.num_items:
            raise ValueError(
                f"the data has {spec.num_items} items but the model was built for {self.model.config.num_items}; "
                f"set model.init_args.model.init_args.config.num_items: {spec.num_items}"
            )
        dm = getattr(self.trainer, "datamodule", None)  # its sequences, for the negatives check
        if dm is not None and getattr(dm, "data", None) is not None and stage in ("fit", "validate", "test"):
            check_negatives(dm.data.sequences, dm.num_items, self.hparams.negatives, "model.init_args.negatives")

    def export_encoder(self, folder, **meta) -> Path:
        """The whole BERT4Rec (encoder + tied output layer) as a Tessera folder (architecture
        "bert4rec"); the data module adds item_ids.json, the map from the data's item ids."""
        from modalities.hub import save_encoder

        meta = {"modality": "recsys", "vector": "hidden state at a MASK after the history", **meta}
        return save_encoder(self.model, folder, meta=meta)

    def training_step(self, batch, batch_idx):
        hidden = self.model(batch["items"], batch["mask"])  # (B, T, D)
        chosen = batch["labels"] != IGNORE
        scores = self.model.item_scores(hidden[chosen])  # (M, num_items)
        loss = F.cross_entropy(scores.float(), batch["labels"][chosen] - 1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["items"].shape[0])
        return loss

    # --- evaluation ------------------------------------------------------------------------
    def _eval_step(self, batch):
        hidden = self.model(batch["items"], batch["mask"])
        last = hidden[torch.arange(len(hidden)), batch["last"]]  # (B, D) at the MASK position
        scores = self.model.item_scores(last).float()  # (B, num_items)
        ranks = leave_one_out_ranks(scores, self.trainer.datamodule.popularity, batch["history"], batch["target"],
                                    batch["user"], self.hparams.negatives, self.hparams.eval_seed)
        for key, r in ranks.items():
            self._ranks.setdefault(key, []).append(r)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def _eval_end(self, split: str) -> dict:
        report = {}
        for key, ranks in self._ranks.items():
            report[key] = ranking_metrics(torch.cat(ranks))
        self._ranks = {}
        logs = {f"{split}/{proto}_{m}": v for key, metrics in report.items() for m, v in metrics.items()
                for who, proto in [key.split("/")] if who == "model"}
        logs.update({f"{split}/mostpop_{proto}_{m}": v for key, metrics in report.items() for m, v in metrics.items()
                     for who, proto in [key.split("/")] if who == "mostpop"})
        self.log_dict(logs, prog_bar=False)
        self.log(f"{split}/ndcg@10", report["model/full"]["ndcg@10"], prog_bar=True)
        return report

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self._eval_end("val")
        else:
            self._ranks = {}

    def on_test_epoch_end(self):
        report = self._eval_end("test")
        if self.trainer.is_global_zero and self.trainer.log_dir:
            path = Path(self.trainer.log_dir) / "test_ranking.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2))

    def predict_step(self, batch, batch_idx, k: int = 10) -> list[dict]:
        """Top-k unseen items per user, as the data's original user and item ids."""
        hidden = self.model(batch["items"], batch["mask"])
        scores = self.model.item_scores(hidden[torch.arange(len(hidden)), batch["last"]]).float()
        for r, hist in enumerate(batch["history"]):
            scores[r, hist.to(scores.device) - 1] = float("-inf")
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices + 1  # remapped ids
        data = self.trainer.datamodule.data
        return [
            {"user": data.users[int(u)], "items": [data.items[i - 1] for i in row.tolist()]}
            for u, row in zip(batch["user"], top, strict=True)
        ]

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self, hp.lr, hp.weight_decay, (0.9, 0.999), 1e-8, hp.warmup,
                               int(self.trainer.estimated_stepping_batches), hp.schedule)

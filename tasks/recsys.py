"""BERT4Rec and SASRec as Lightning systems: cloze (BERT4Rec) or next-item (SASRec) training,
leave-one-out evaluation under every protocol in use (tasks/metrics/ranking.py: full ranking with
and without the history, 100 popularity-sampled and 100 uniform negatives), with MostPopular
ranked by the same code on the same candidates."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from modalities.recsys import BERT4Rec, SASRec

from .data.collate import IGNORE
from .data.spec import spec_of
from .metrics.ranking import RankingEvaluator
from .optim import build_optimizer


class BERT4RecSystem(L.LightningModule):
    """Args:
        model: the BERT4Rec network (injected; ``num_items: 0`` takes the item count from the data,
            any other value must match it).
        lr, weight_decay, warmup, schedule: AdamW and its schedule (paper: 1e-4, 0.01, 100 steps, linear).
        negatives: negatives per user for the sampled protocols (popularity: BERT4Rec's paper; uniform:
            SASRec's), 100.
        eval_seed: seeds the negative sampling, so every evaluation uses the same candidates.
        init_from: an encoder folder (``tessera export`` / a run's encoder/) whose weights start
            training; its architecture and size must equal ``model``'s.
    """

    loss_label = "masked-item cross-entropy"  # the y axis of loss_curve.png
    objective = "cloze"  # the data module's objective this system trains with

    def __init__(
        self,
        model: BERT4Rec,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup: float = 100,
        schedule: str = "linear",
        negatives: int = 100,
        eval_seed: int = 0,
        init_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = model
        self._evaluator: RankingEvaluator | None = None
        if init_from:
            self._init_from(init_from)

    def _resize(self, num_items: int) -> None:
        """Build the network anew for ``num_items`` (config ``num_items: 0`` = take it from the data)."""
        from dataclasses import replace

        self.model = type(self.model)(replace(self.model.config, num_items=num_items))

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """A system built with ``num_items: 0`` takes its item count from the weights it loads."""
        key = "model.encoder.frontend.word_embeddings.weight"
        if self.model.config.num_items == 0 and key in state_dict:
            self._resize(state_dict[key].shape[0] - 2)  # rows: PAD + items + MASK
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def _init_from(self, folder: str) -> None:
        from modalities.hub import load_encoder

        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.init_args.init_from {path} is not an encoder folder (no config.json); "
                                    "give a recsys run's encoder/ folder or a `tessera export` output")
        source = load_encoder(path)
        if self.model.config.num_items == 0:  # the item count comes from the folder (and is checked against the data)
            self._resize(source.config.num_items)
        if type(source) is not type(self.model) or source.config != self.model.config:
            raise ValueError(f"model.init_args.init_from {path} holds a {type(source).__name__} {source.config}, "
                             f"not this {type(self.model).__name__} {self.model.config}; build the model alike")
        self.model.load_state_dict(source.state_dict(), strict=True)

    def setup(self, stage: str) -> None:
        spec = spec_of(self.trainer)
        if self.model.config.num_items == 0:
            if spec is None or spec.num_items is None:
                raise ValueError("model.init_args.model.init_args.config.num_items is 0 (from the data) but there is "
                                 "no recsys data module to take it from; use tasks.data.SequenceDataModule")
            self._resize(spec.num_items)
        if spec is not None and spec.num_items is not None and spec.num_items != self.model.config.num_items:
            raise ValueError(
                f"the data has {spec.num_items} items but the model was built for {self.model.config.num_items}; "
                f"set model.init_args.model.init_args.config.num_items: 0 (from the data) or {spec.num_items}"
            )
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "objective", self.objective) != self.objective:
            raise ValueError(f"{type(self).__name__} trains with data.init_args.objective: {self.objective}, "
                             f"got {dm.objective!r}; set it in the data section")

    def export_encoder(self, folder, **meta) -> Path:
        """The whole network (encoder + tied output layer) as a Tessera folder (architecture
        "bert4rec" / "sasrec"); the data module adds item_ids.json, the map from the data's item ids."""
        from modalities.hub import save_encoder

        vector = ("hidden state at the history's last item" if self.model.config.causal
                  else "hidden state at a MASK after the history")
        meta = {"modality": "recsys", "vector": vector, **meta}
        return save_encoder(self.model, folder, meta=meta)

    def training_step(self, batch, batch_idx):
        hidden = self.model(batch["items"], batch["mask"])  # (B, T, D)
        chosen = batch["labels"] != IGNORE
        scores = self.model.item_scores(hidden[chosen])  # (M, num_items)
        loss = F.cross_entropy(scores.float(), batch["labels"][chosen] - 1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["items"].shape[0])
        return loss

    # --- evaluation ------------------------------------------------------------------------
    def _scores(self, batch) -> torch.Tensor:
        """(B, num_items) fp32 scores at each row's scoring position. Outside any autocast
        (``trainer.precision: bf16-mixed`` trains in bf16): bf16's 8-bit mantissa would tie many
        items' scores, and ties change ranks."""
        with torch.autocast(self.device.type, enabled=False):
            hidden = self.model(batch["items"], batch["mask"])
            return self.model.item_scores(hidden[torch.arange(len(hidden)), batch["last"]]).float()

    def _eval_step(self, batch):
        scores = self._scores(batch)  # (B, num_items)
        if self._evaluator is None:
            self._evaluator = RankingEvaluator(self.trainer.datamodule.popularity, self.hparams.negatives,
                                               self.hparams.eval_seed)
        self._evaluator.update(scores, batch["history"], batch["target"], batch["user"])

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def _eval_end(self, split: str) -> dict:
        report = self._evaluator.compute()
        self._evaluator = None
        logs = {}
        for proto, rows in report["protocols"].items():
            for who, metrics in rows.items():
                prefix = f"{split}/{proto}_" if who == "model" else f"{split}/{who}_{proto}_"
                logs.update({prefix + m: v for m, v in metrics.items()})
        self.log_dict(logs, prog_bar=False)
        self.log(f"{split}/ndcg@10", report["protocols"]["full"]["model"]["ndcg@10"], prog_bar=True)
        return report

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self._eval_end("val")
        else:
            self._evaluator = None

    def on_test_epoch_end(self):
        report = self._eval_end("test")
        if self.trainer.is_global_zero and self.trainer.log_dir:
            path = Path(self.trainer.log_dir) / "test_ranking.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2))

    def predict_step(self, batch, batch_idx, k: int = 10) -> list[dict]:
        """Top-k unseen items per user, as the data's original user and item ids."""
        scores = self._scores(batch)
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


class SASRecSystem(BERT4RecSystem):
    """SASRec: the next item predicted at every position of every training sequence (the data module's
    ``objective: next``), with full-softmax cross-entropy over all items (Klenitskiy & Vasilev,
    RecSys 2023, "SASRec+CE"), or, with ``loss_negatives: N``, a softmax over the true item and N
    uniformly drawn items per position (shared across the batch). Evaluation as BERT4RecSystem.

    Args: as BERT4RecSystem, and
        loss_negatives: 0 = full softmax (default); N > 0 = sampled softmax over 1 + N items.
    """

    loss_label = "next-item cross-entropy"
    objective = "next"

    def __init__(
        self,
        model: SASRec,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup: float = 0,
        schedule: str = "constant",
        negatives: int = 100,
        eval_seed: int = 0,
        init_from: str | None = None,
        loss_negatives: int = 0,
    ):
        if not model.config.causal:
            raise ValueError("SASRecSystem needs a causal model: model.class_path modalities.recsys.SASRec")
        if loss_negatives < 0:
            raise ValueError(f"model.init_args.loss_negatives must be >= 0, got {loss_negatives}")
        super().__init__(model, lr, weight_decay, warmup, schedule, negatives, eval_seed, init_from)
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        hidden = self.model(batch["items"], batch["mask"])  # (B, T, D)
        chosen = batch["labels"] != IGNORE
        h, target = hidden[chosen], batch["labels"][chosen] - 1  # (M, D), (M,) columns
        n = self.hparams.loss_negatives
        if n == 0:
            loss = F.cross_entropy(self.model.item_scores(h).float(), target)
        else:  # sampled softmax: the true column first, then n uniform columns shared by the batch
            neg = torch.randint(0, self.model.config.num_items, (n,), device=h.device)
            cols = torch.cat([target[:, None], neg[None, :].expand(len(target), n)], 1)  # (M, 1 + n)
            logits = self.model.candidate_scores(h, cols)  # (M, 1 + n)
            hit = torch.cat([torch.zeros_like(cols[:, :1], dtype=torch.bool), cols[:, 1:] == target[:, None]], 1)
            logits = logits.masked_fill(hit, float("-inf"))  # a drawn negative that is the true item
            loss = F.cross_entropy(logits.float(), torch.zeros_like(target))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["items"].shape[0])
        return loss

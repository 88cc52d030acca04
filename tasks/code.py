"""Fine-tuning on the CuBERT benchmark: a classification system and a pointer (localise + repair)
system. The encoder arrives by injection (a TokenEncoder, the BiLSTM baseline); ``init_from``
names the weights to start from: an encoder folder (what every ``tessera fit`` writes to
``<log dir>/encoder``, ``tessera export`` / ``tessera import`` make, or a CuBERT folder), or a
masked-LM run (its folder, log folder or a .ckpt in it, rebuilt by ``tasks.runs.load_system``).
The weights are copied in when fitting starts, so a fine-tuned run reloads (``load_system``)
without the folder it started from.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from modalities import load_encoder
from modalities.backbone import create_pooler

from .data.spec import require_vocab, spec_of
from .metrics import auroc
from .optim import build_optimizer


def pretrained_state(path: str | Path) -> tuple[dict[str, torch.Tensor], Path | None]:
    """(encoder state dict, the encoder folder or None) of ``init_from``: an encoder folder
    (config.json) or a run / log folder / checkpoint whose system has an ``encoder``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"init_from {path} does not exist; give an encoder folder (a run's <log dir>/encoder) "
                                "or a masked-LM run folder / checkpoint")
    from .runs import final_weights, load_system

    path = Path(final_weights(path))  # a finished run: its final encoder/, not a last.ckpt saved before the end
    if path.is_dir() and (path / "config.json").is_file():
        return load_encoder(path).state_dict(), path

    system, _, _ = load_system(path)
    if not isinstance(getattr(system, "encoder", None), nn.Module):
        raise ValueError(f"init_from {path}: its system ({type(system).__name__}) has no encoder to start from")
    return system.encoder.state_dict(), None


def load_pretrained_encoder(encoder: nn.Module, path: str | Path) -> dict:
    """Copy the weights ``init_from`` names into ``encoder`` (strict). Returns {"source", "keys"}."""
    state, _ = pretrained_state(path)
    own = encoder.state_dict()
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape}
    if bad:
        raise ValueError(f"init_from {path} does not fit the configured encoder (theirs, ours): {dict(list(bad.items())[:3])}; "
                         "give the encoder config the pretraining run used")
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise ValueError(f"init_from {path} does not fit the configured encoder: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}; give the encoder config the pretraining run used")
    encoder.load_state_dict(state, strict=True)
    return {"source": str(path), "keys": len(state)}


def _vocab_of(tokenizer: Path) -> dict | None:
    """A WordPiece code tokenizer's vocabulary (None for another kind or none)."""
    file = tokenizer / "tokenizer.json" if tokenizer.is_dir() else tokenizer
    if file.suffix != ".json" or not file.is_file():
        return None
    return json.loads(file.read_text()).get("model", {}).get("vocab")


class _FineTuneBase(L.LightningModule):
    loss_label = "fine-tuning cross-entropy"  # the y axis of loss_curve.png

    def __init__(self, encoder: nn.Module, init_from: str | None, lr: float, weight_decay: float, warmup: float,
                 schedule: str, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.init_from = init_from
        self.pretrained_info: dict | None = None

    def start_from_pretrained(self) -> dict | None:
        """Copy ``init_from``'s weights into the encoder (once); called when fitting starts."""
        if self.init_from and self.pretrained_info is None:
            self.pretrained_info = load_pretrained_encoder(self.encoder, self.init_from)
        return self.pretrained_info

    def encode(self, batch) -> torch.Tensor:
        kw = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        return self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw).last_hidden_state

    def setup(self, stage: str) -> None:
        require_vocab(spec_of(self.trainer), self.encoder.config.vocab_size,
                      "model.init_args.encoder.init_args.config.vocab_size")
        dm = getattr(self.trainer, "datamodule", None)  # its tokenizer, compared with init_from's below
        if stage != "fit" or not self.init_from:
            return
        from .jobs import UserError  # `tessera fit` prints it as one line (exit 2)

        folder = Path(self.init_from).expanduser()
        tok = getattr(dm, "tokenizer_file", None)
        if tok is not None and folder.is_dir() and (folder / "tokenizer.json").is_file():
            if _vocab_of(folder) != _vocab_of(Path(tok)):
                raise UserError(f"init_from {folder} carries another tokenizer than data.tokenizer ({tok}); "
                                f"set --data.init_args.tokenizer {folder}")
        try:
            self.start_from_pretrained()
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e).splitlines()[0]) from None

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self, hp.lr, hp.weight_decay, (0.9, 0.98), 1e-6, hp.warmup,
                               int(self.trainer.estimated_stepping_batches), hp.schedule)

    def write_json(self, name: str, metrics: dict) -> None:
        if self.trainer is not None and self.trainer.is_global_zero:
            folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(json.dumps(metrics, indent=2) + "\n")


POOLINGS = ("cls", "mean", "max")


class CodeClassifierSystem(_FineTuneBase):
    """[CLS] representation -> dropout -> linear; cross-entropy; accuracy.

    Args:
        encoder: the token encoder (or BiLSTM) to fine-tune (injected).
        num_classes: 2 for the bug-detection tasks, 20 for exception_type.
        init_from: the weights to start from (an encoder folder, or a masked-LM run / checkpoint); None: from scratch.
        lr, weight_decay, warmup, schedule: AdamW and its schedule.
        dropout: on the pooled representation.
        pooling: "cls" (position 0; the BiLSTM uses "mean"), "mean" over the real tokens, or "max"
            (element-wise over the real tokens: every token gets gradient, so a local anomaly such as
            one misused variable can decide the class without first being routed to [CLS]).
    """

    def __init__(self, encoder: nn.Module, num_classes: int = 2, init_from: str | None = None, lr: float = 1e-4,
                 weight_decay: float = 0.01, warmup: float = 0.1, schedule: str = "linear", dropout: float = 0.1,
                 pooling: str = "cls"):
        super().__init__(encoder, init_from, lr, weight_decay, warmup, schedule, dropout)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.save_hyperparameters()
        self.pool = create_pooler(pooling, encoder.config.hidden_size)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.acc = {s: MeanMetric() for s in ("val", "test")}
        for s, m in self.acc.items():
            self.add_module(f"{s}_acc", m)

    def forward(self, batch) -> torch.Tensor:
        pooled = self.pool(self.encode(batch), batch["attention_mask"])  # (B, T, D) -> (B, D)
        return self.head(self.dropout(pooled)).float()  # (B, C)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _eval_step(self, batch, split):
        logits = self(batch)
        self.acc[split].update((logits.argmax(-1) == batch["labels"]).float())
        self.log(f"{split}/loss", F.cross_entropy(logits, batch["labels"]), batch_size=len(batch["labels"]))

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _end(self, split):
        acc = self.acc[split].compute()
        self.log(f"{split}/accuracy", acc, prog_bar=True)
        self.acc[split].reset()
        if split == "test":
            self.write_json("test_metrics.json", {"test/accuracy": float(acc)})

    def on_validation_epoch_end(self):
        self._end("val")

    def on_test_epoch_end(self):
        self._end("test")


class VarMisusePointerSystem(_FineTuneBase):
    """CuBERT's Variable-Misuse localisation + repair: two pointer heads over token positions.

    Localisation: a distribution over {0 = [CLS] = no bug} and the candidate positions; repair: a
    distribution over candidate positions, trained to put its mass on the target positions (any
    occurrence of the right variable). Metrics (Vasic et al., as CuBERT): classification (bug or
    not), localisation (the right position, bug-free included), repair (on buggy examples) and
    joint (localisation and repair right); and, threshold-free, the AUROC of the bug score
    1 - p(position 0) as a detector (``auroc``: is a buggy function ranked above a clean one).
    """

    def __init__(self, encoder: nn.Module, init_from: str | None = None, lr: float = 1e-4, weight_decay: float = 0.01,
                 warmup: float = 0.1, schedule: str = "linear", dropout: float = 0.1):
        super().__init__(encoder, init_from, lr, weight_decay, warmup, schedule, dropout)
        self.save_hyperparameters()
        self.pointer = nn.Linear(encoder.config.hidden_size, 2)  # (localisation, repair) logit per position
        self.metrics = nn.ModuleDict({f"{s}_{m}": MeanMetric() for s in ("val", "test")
                                      for m in ("classification", "localization", "repair", "joint")})
        self.bug_scores: dict[str, list[torch.Tensor]] = {"val": [], "test": []}  # (score, label) per batch

    def forward(self, batch):
        logits = self.pointer(self.dropout(self.encode(batch))).float()  # (B, T, 2)
        cand = batch["candidate_mask"].clone()
        loc_allowed = cand.clone()
        loc_allowed[:, 0] = True  # position 0: no bug
        loc = logits[..., 0].masked_fill(~loc_allowed, -1e4)  # (B, T)
        rep = logits[..., 1].masked_fill(~cand, -1e4)  # (B, T)
        return loc, rep

    def _losses(self, batch):
        loc, rep = self(batch)
        loc_loss = F.cross_entropy(loc, batch["error_position"])
        buggy = batch["error_position"] > 0
        rep_lp = rep.log_softmax(-1).masked_fill(~batch["target_mask"], -1e4).logsumexp(-1)  # (B,)
        rep_loss = -(rep_lp[buggy]).mean() if buggy.any() else loc.new_zeros(())
        return loc, rep, loc_loss + rep_loss

    def training_step(self, batch, batch_idx):
        _, _, loss = self._losses(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _eval_step(self, batch, split):
        loc, rep, loss = self._losses(batch)
        self.log(f"{split}/loss", loss, batch_size=len(batch["labels"]))
        err = batch["error_position"]
        buggy = err > 0
        loc_pred = loc.argmax(-1)
        rep_pred = rep.argmax(-1)
        rep_ok = batch["target_mask"].gather(1, rep_pred[:, None])[:, 0]
        self.metrics[f"{split}_classification"].update(((loc_pred > 0) == buggy).float())
        # the log odds of a bug, log (1 - p0) / p0: monotone in 1 - p0 and free of float ties near p0 = 1
        odds = loc.float()[:, 1:].logsumexp(-1) - loc.float()[:, 0]
        self.bug_scores[split].append(torch.stack([odds, buggy.float()], 1).detach().cpu())  # one device: no sync
        self.metrics[f"{split}_localization"].update((loc_pred == err).float())
        if buggy.any():
            self.metrics[f"{split}_repair"].update(rep_ok[buggy].float())
            self.metrics[f"{split}_joint"].update((rep_ok & (loc_pred == err))[buggy].float())

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _end(self, split):
        out = {}
        for m in ("classification", "localization", "repair", "joint"):
            metric = self.metrics[f"{split}_{m}"]
            out[f"{split}/{m}"] = float(metric.compute()) if metric.update_count else float("nan")
            metric.reset()
        scores = torch.cat(self.bug_scores[split]) if self.bug_scores[split] else torch.zeros(0, 2)
        self.bug_scores[split] = []
        out[f"{split}/auroc"] = auroc(scores[:, 0].tolist(), scores[:, 1].long().tolist())
        self.log_dict(out, prog_bar=split == "val")
        if split == "test":
            self.write_json("test_metrics.json", out)

    def on_validation_epoch_end(self):
        self._end("val")

    def on_test_epoch_end(self):
        self._end("test")

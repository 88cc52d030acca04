"""Callbacks every run can use: metric history as JSON and a loss-curve PNG; heap release on CPU;
the trained encoder exported as a safetensors folder at the end of fit."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class ReleaseHeap(L.Callback):
    """Hands the C heap's free pages back to the OS every ``every_n_steps`` training steps.

    CPU training on batches of varying shape (unpadded attention packs a different token count
    every step) leaves glibc's heap fragmented: measured on a 4.7 M-parameter code encoder, the
    resident memory grew by about 6 MB a step (1.6 GB at step 40, 2.7 GB at step 200, 6 GB after
    2,000 MLM steps) although nothing is kept. ``malloc_trim(0)`` every 20 steps holds it at about
    1.6 GB. A call took 0.1 ms (median) to 18 ms (with much freed memory to hand back) in a quick
    measurement, against 20 steps of about 0.3 s each. A no-op without glibc or on accelerators.
    """

    def __init__(self, every_n_steps: int = 20):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.trims = 0
        self._trim = _malloc_trim()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._trim is None or trainer.strategy.root_device.type != "cpu":
            return
        if trainer.global_step % self.every_n_steps == 0:
            self._trim(0)
            self.trims += 1


class TrainingLevers(L.Callback):
    """Run-time speed levers applied to every shared ``Backbone`` in the system as a stage starts (the weights
    and the saved config never change, so any run can switch them on or off):

    - ``checkpointing``: activation checkpointing; each layer keeps only its input and recomputes
      the rest in backward (measured on the MiniLM size, 32 ragged sequences: 7 % of the bytes kept
      for backward, 1.16-1.27x the CPU time of a step in two runs);
    - ``compile``: ``torch.compile`` of each layer with a dynamic token count
      (``Backbone.compile_layers``; ``compile_mode`` is torch.compile's ``mode``). The first
      training step carries the compile time; it is kept in ``first_step_seconds`` and printed.

    In a config::

        trainer:
          callbacks:
            - class_path: tasks.callbacks.TrainingLevers
              init_args: {checkpointing: true}
    """

    MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

    def __init__(self, compile: bool = False, checkpointing: bool = False, compile_mode: str | None = None):
        if compile_mode is not None and compile_mode not in self.MODES:
            raise ValueError(f"TrainingLevers: compile_mode {compile_mode!r} is not one of {', '.join(self.MODES)}")
        self.compile, self.checkpointing, self.compile_mode = compile, checkpointing, compile_mode
        self.first_step_seconds: float | None = None
        self.backbones = 0
        self._compiled: set[int] = set()
        self._t0: float | None = None

    def apply(self, pl_module) -> None:
        """Set the levers on every ``Backbone`` in ``pl_module`` (each compiled once)."""
        from modalities.backbone import Backbone

        backbones = [m for m in pl_module.modules() if isinstance(m, Backbone)]
        if not backbones:
            raise ValueError(f"TrainingLevers: {type(pl_module).__name__} has no shared Backbone to apply them to; "
                             "remove the callback from the config")
        for backbone in backbones:
            backbone.checkpointing = self.checkpointing
            if self.compile and id(backbone) not in self._compiled:
                backbone.compile_layers(**({"mode": self.compile_mode} if self.compile_mode else {}))
                self._compiled.add(id(backbone))
        self.backbones = len(backbones)

    # Lightning runs a callback's ``setup`` before the module's own, and a system may build its
    # networks there (BERT4Rec / SASRec with ``num_items: 0`` size theirs from the data): the levers
    # go on at the start of each stage instead, on the networks that will run.
    def on_fit_start(self, trainer, pl_module):
        self.apply(pl_module)

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn != "fit":
            self.apply(pl_module)

    def on_test_start(self, trainer, pl_module):
        self.apply(pl_module)

    def on_predict_start(self, trainer, pl_module):
        self.apply(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step_seconds is None and self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.first_step_seconds is None and self._t0 is not None:
            self.first_step_seconds = time.perf_counter() - self._t0
            if self.compile:
                from lightning.pytorch.utilities import rank_zero_info

                rank_zero_info(f"TrainingLevers: first training step {self.first_step_seconds:.1f} s "
                               "(torch.compile included)")


class KeepBest(L.Callback):
    """Keeps, in memory, the weights of the validation round with the best ``monitor`` value
    (checkpoint selection on the valid split, as CuBERT chose its fine-tuned checkpoints);
    ``restore(module)`` loads them back and ``best_metrics`` holds every metric of that round.
    Nothing is written to disk, so no pickled module ever has to be read back.

    Args:
        monitor: a metric logged at validation (e.g. "val/accuracy").
        mode: "max" or "min".
    """

    def __init__(self, monitor: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.history: list[tuple[int, float]] = []
        self._state: dict | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(f"KeepBest: {self.monitor!r} was not logged at validation; logged: {sorted(trainer.callback_metrics)}")
        value = float(value)
        self.history.append((trainer.global_step, value))
        better = self.best_score is None or (value > self.best_score if self.mode == "max" else value < self.best_score)
        if better and math.isfinite(value):
            self.best_score, self.best_step = value, trainer.global_step
            self.best_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            self._state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def restore(self, module: torch.nn.Module) -> None:
        if self._state is None:
            raise RuntimeError("KeepBest.restore: no validation round has run yet")
        module.load_state_dict(self._state)


def _jsonable(x):
    """A data module's ``stats`` (dicts, dataclasses such as ReadStats, numbers) as JSON values."""
    import dataclasses

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


class MetricsRecorder(L.Callback):
    """Records every logged ``train/*`` step and ``val/*`` evaluation; writes ``metrics.json``
    and ``loss_curve.png`` into the run's log folder (or ``out_dir``) after each validation
    and at the end of fit.
    """

    def __init__(self, out_dir: str | None = None, every_n_steps: int = 1):
        self.out_dir = out_dir
        self.every_n_steps = every_n_steps
        self.history: dict[str, list] = {"train": [], "val": []}
        self.folder: Path | None = None
        self.loss_label = "loss"

    def setup(self, trainer, pl_module, stage):
        # trainer.log_dir is a collective under DDP: resolve it here, where every rank calls it
        self.folder = Path(self.out_dir or trainer.log_dir or trainer.default_root_dir)
        # a system says what its loss is (``loss_label = "masked-token cross-entropy"``); else the key
        self.loss_label = getattr(pl_module, "loss_label", None) or "loss"

    @staticmethod
    def _scalars(metrics: dict, prefix: str) -> dict:
        return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and torch.as_tensor(v).numel() == 1}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            row = self._scalars(trainer.callback_metrics, "train/")
            if row:
                self.history["train"].append({"step": trainer.global_step, **row})

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        row = self._scalars(trainer.callback_metrics, "val/")
        if row:
            self.history["val"].append({"step": trainer.global_step, "epoch": trainer.current_epoch, **row})
        if trainer.is_global_zero:
            self.write(trainer)

    def on_fit_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.write(trainer)

    def state_dict(self) -> dict:  # the history survives a resume
        return {"history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"]

    def write(self, trainer: L.Trainer) -> Path:
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        summary = {
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "final": {k: v for k, v in (self.history["val"][-1] if self.history["val"] else {}).items()},
            "history": self.history,
        }
        data = _jsonable(getattr(trainer.datamodule, "stats", None))
        if data:  # what the data module read and skipped, with the reasons (e.g. rows of an interaction file)
            summary["data"] = data
        (folder / "metrics.json").write_text(json.dumps(summary, indent=1))
        self.plot(folder / "loss_curve.png", trainer)
        return folder

    def plot(self, path: Path, trainer: L.Trainer) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        train = [(r["step"], r["train/loss"]) for r in self.history["train"] if "train/loss" in r]
        val = [(r["step"], r["val/loss"]) for r in self.history["val"] if "val/loss" in r]
        if train:
            steps, losses = zip(*train, strict=True)
            ax.plot(steps, losses, lw=0.8, alpha=0.5, label="train/loss (step)")
            w = max(1, len(losses) // 25)  # running mean for readability
            smooth = [sum(losses[max(0, i - w + 1) : i + 1]) / len(losses[max(0, i - w + 1) : i + 1]) for i in range(len(losses))]
            ax.plot(steps, smooth, lw=1.5, label=f"train/loss (mean of {w})")
        if val:
            ax.plot(*zip(*val, strict=True), "o-", lw=1.5, label="val/loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(self.loss_label)
        ax.set_title(f"{type(trainer.lightning_module).__name__}: train/loss and val/loss", fontsize=9)
        if train and all(v > 0 and math.isfinite(v) for v in losses):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


class JsonLinesWriter(BasePredictionWriter):
    """Writes what ``predict_step`` returns (a list of dicts per batch) as JSON lines."""

    def __init__(self, path: str = "predictions.jsonl"):
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self._started = False

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        if not self._started:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            self._started = True
        with self.path.open("a") as f:
            for row in prediction:
                f.write(json.dumps(row) + "\n")


class ExportEncoder(L.Callback):
    """At the end of fit, write the system's encoder into ``<log dir>/encoder`` (or ``path``) for
    ``load_encoder``, ``tessera embed`` / ``eval`` and the next stage's ``init_from``, with what the
    data module says a user of the encoder needs (``tasks.export.export_encoder``). ``tessera fit``
    adds one to every run; ``required=False`` there, so a system with nothing to export says so."""

    def __init__(self, path: str | None = None, required: bool = True):
        self.path = path
        self.required = required

    def on_fit_end(self, trainer, pl_module):
        from .export import export_encoder
        from .jobs import UserError

        # trainer.log_dir is a collective under DDP (rank 0 broadcasts it): every rank asks
        folder = Path(self.path) if self.path else Path(trainer.log_dir or trainer.default_root_dir) / "encoder"
        # sharded runs (FSDP): gathering the full weights is a collective too, so every rank enters
        with full_weights(trainer, pl_module):
            if not trainer.is_global_zero:
                return
            try:
                export_encoder(pl_module, folder, datamodule=getattr(trainer, "datamodule", None),
                               step=trainer.global_step)
            except UserError as e:
                if self.required:
                    raise
                print(f"no encoder exported: {e}")
                return
        print(f"exported the trained encoder to {folder}")


@contextlib.contextmanager
def full_weights(trainer, module: torch.nn.Module):
    """Inside, on rank 0, ``module``'s parameters are the full (unsharded) tensors; every rank must enter.

    - FSDP (``strategy: fsdp``, torch's FullyShardedDataParallel): ``summon_full_params`` with
      ``rank0_only`` (the other ranks only take part in the all-gathers) and no write-back.
    - FSDP2 (``fully_shard``) and tensor parallelism: the parameters are DTensors; each is gathered
      (``full_tensor``, in module order on every rank) and, on rank 0, swapped in for the duration.
    - Anything else (one process, DDP): the parameters are already whole; nothing happens.

    Outside, the module is as it was, so validation or testing after fit runs unchanged.
    """
    model = getattr(trainer.strategy, "model", None) or module
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if any(isinstance(m, FSDP) for m in model.modules()):
        with FSDP.summon_full_params(model, writeback=False, rank0_only=True, offload_to_cpu=True):
            yield
        return
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without DTensor
        yield
        return
    swapped, full_of = [], {}
    keep = trainer.is_global_zero
    for owner in module.modules():
        for kind in ("_parameters", "_buffers"):
            for name, t in list(getattr(owner, kind).items()):
                if not isinstance(t, DTensor):
                    continue
                if id(t) not in full_of:  # a tied weight is gathered once and stays tied
                    full = t.full_tensor().detach()  # collective
                    full_of[id(t)] = (torch.nn.Parameter(full, requires_grad=False) if kind == "_parameters"
                                      else full) if keep else None
                if keep:
                    swapped.append((owner, kind, name, t))
                    getattr(owner, kind)[name] = full_of[id(t)]
    try:
        yield
    finally:
        for owner, kind, name, t in swapped:
            getattr(owner, kind)[name] = t


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN / inf loss more often in a row than the run allows."""


class StopOnNonFinite(L.Callback):
    """Stops training with a clear message when the training loss is NaN or inf for more than
    ``patience`` steps in a row (default: at the first one), instead of training on garbage and
    exiting 0. ``tessera fit`` adds one to every run; list it in a YAML to set the patience."""

    def __init__(self, patience: int = 0):
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience = patience
        self.bad = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if bool(torch.isfinite(torch.as_tensor(loss).detach()).all()):
            self.bad = 0
            return
        self.bad += 1
        if self.bad > self.patience:
            raise NonFiniteLossError(
                f"the training loss was {float(torch.as_tensor(loss).detach().float().mean())} at step "
                f"{trainer.global_step} ({self.bad} step(s) in a row); stopping. Lower the learning rate, raise "
                "gradient_clip_val, use fp32, or resume from an earlier checkpoint (--ckpt_path)")


class CheckpointIntegrity(L.Callback):
    """Writes a checksum of the weights into every checkpoint (``tessera_checksum``) and verifies it,
    and that every weight is finite, when a checkpoint is loaded; a flipped byte or a diverged
    checkpoint is refused with the file's name instead of being trained on."""

    KEY = "tessera_checksum"

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        from modalities.hub import tensor_checksum

        checkpoint[self.KEY] = tensor_checksum(checkpoint["state_dict"])

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        from .runs import verify_checkpoint

        verify_checkpoint(checkpoint, getattr(trainer, "ckpt_path", None) or "the checkpoint")


class RandomState(L.Callback):
    """Saves every random generator's state (torch CPU and CUDA, Python, NumPy) in each checkpoint
    and restores it when a run resumes, after the sanity check and just before training goes on,
    so that dropout draws the same numbers as in an uninterrupted run: a resumed run ends with the
    same weights, bit for bit. ``tessera fit`` adds one to every run."""

    def __init__(self):
        self._pending: dict | None = None

    @staticmethod
    def capture() -> dict:
        import random

        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain tensors and numbers only: checkpoints are read with weights_only=True
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def apply(state: dict) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def state_dict(self) -> dict:
        return {"rng": self.capture()}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state.get("rng")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending is not None:
            self.apply(self._pending)
            self._pending = None

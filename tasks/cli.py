"""The ``tessera`` command.

    tessera fit --config configs/text/tiny.yaml                  # LightningCLI: fit/validate/test/predict
    tessera fit --config configs/text/tiny.yaml --ckpt_path last  # resume the newest last.ckpt of the run
    tessera prepare <what> ...                                   # data sets, corpora, benchmarks
    tessera eval <what> ...                                      # evaluations and sweeps (JSON + plot)
    tessera embed --encoder FOLDER INPUTS...                     # vectors from any encoder folder
    tessera export CKPT_OR_RUN OUT                               # a checkpoint or run -> encoder folder
    tessera import SRC DST --check                               # a foreign checkpoint -> encoder folder

Every ``tessera fit`` writes ``<log dir>/encoder`` (config.json + model.safetensors + what the
modality needs to use it) at the end of fit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from .jobs import GROUPS, UserError, jobs_in, load_jobs

LIGHTNING = ("fit", "validate", "test", "predict")
USAGE_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError)


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The newest ``last.ckpt`` under a run's ``default_root_dir`` (any ``lightning_logs/version_N``)."""
    found = [p for p in Path(root).expanduser().rglob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# The run contract every YAML gets without repeating it (a YAML or a --config preset under
# configs/trainer/ overrides any of it): Tessera's loaders shard by rank themselves and record their
# position (exact mid-epoch resume); a log line every 10 steps; and (before_fit) the checkpoint
# callback keeps last.ckpt, so `--ckpt_path last` always has something to resume.
TRAINER_DEFAULTS = {"use_distributed_sampler": False, "log_every_n_steps": 10}


def _vocab_fields(model) -> list[str]:
    """The dotted keys of every token-embedding size inside a parsed model (a TokenEncoder's
    ``config.vocab_size``, an LLM2Vec decoder's ``config.decoder.vocab_size``), however deep the
    model nests its encoders (a tower in a dual tower in a system)."""
    keys = []
    for key, value in model.items():
        if key.split(".")[-1] == "vocab_size":
            keys.append(key)
        elif isinstance(value, dict) and ("vocab_size" in value or "model_type" in value):  # an HF config
            keys.append(f"{key}.vocab_size")
    return keys


def link_vocabulary(cfg) -> None:
    """Write the vocabulary once per YAML: a data module that trains its own tokenizer
    (``data.init_args.vocab_size``, no ``tokenizer`` file) gives its size to every token embedding
    of the model. A model size written too and different is refused, naming both (a tokenizer file
    decides its own size; the system checks it against the model at set-up)."""
    data, model = cfg.get("data"), cfg.get("model")
    args = data.get("init_args") if data is not None and hasattr(data, "get") else None
    if args is None or model is None or args.get("vocab_size") is None or args.get("tokenizer"):
        return
    from modalities.backbone.config import TokenEncoderConfig

    unwritten = (None, TokenEncoderConfig.__dataclass_fields__["vocab_size"].default)
    vocab = int(args.vocab_size)
    for key in _vocab_fields(model):
        head, _, leaf = key.rpartition(".")
        holder = model[head] if head else model
        own = holder.get(leaf)
        if own != vocab and own not in unwritten:
            raise UserError(f"model.{key} is {own} but data.init_args.vocab_size is {vocab}: the vocabulary is "
                            "written once, on the data module; drop the model's")
        if isinstance(holder, dict):
            holder[leaf] = vocab
        else:
            model[key] = vocab


def default_callbacks(outputs: bool = True) -> list:
    """The callbacks every ``tessera fit`` adds unless its YAML lists one of the kind: it stops on a
    non-finite loss, checksums its checkpoints, restores every random state on resume and hands freed
    heap back to the OS on CPU (a no-op elsewhere); with ``outputs``, it also leaves metrics.json +
    loss_curve.png and <log dir>/encoder (they change no weight: a resume test may leave them out)."""
    from .callbacks import (
        CheckpointIntegrity,
        ExportEncoder,
        MetricsRecorder,
        RandomState,
        ReleaseHeap,
        StopOnNonFinite,
    )

    callbacks = [StopOnNonFinite(), CheckpointIntegrity(), RandomState(), ReleaseHeap()]
    return [MetricsRecorder(), *callbacks, ExportEncoder(required=False)] if outputs else callbacks


class TesseraCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True):
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
            run=run,
        )

    def _parse_ckpt_path(self) -> None:
        # runs before LightningCLI reads the checkpoint's hyperparameters, so every checkpoint
        # problem is one line here. `--ckpt_path last`: Lightning looks for "last" only in the
        # *new* version folder the default logger has just made; look across the run's versions
        # and continue in the one found.
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else None
        if cfg is not None and cfg.get("ckpt_path") == "last":
            root = cfg.trainer.default_root_dir or os.getcwd()
            last = find_last_checkpoint(root)
            if last is None:
                raise UserError(f"--ckpt_path last: no last.ckpt under {root} (trainer.default_root_dir); "
                                "start without --ckpt_path, or give a checkpoint's path")
            cfg.ckpt_path = str(last)
            version_dir = last.parent.parent  # <root>/lightning_logs/version_N/checkpoints/last.ckpt
            if version_dir.name.startswith("version_") and cfg.trainer.logger in (None, True):
                cfg.trainer.logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                      "init_args": {"save_dir": str(version_dir.parent.parent),
                                                    "name": version_dir.parent.name,
                                                    "version": int(version_dir.name.removeprefix("version_"))}}
            print(f"resuming from {last}", file=sys.stderr)
        if cfg is not None and cfg.get("ckpt_path") not in (None, "best"):
            from .runs import check_resumable

            try:  # missing, truncated, corrupt (checksum), non-finite, not a Lightning checkpoint: refused
                self._ckpt_names = check_resumable(cfg.ckpt_path)  # before anything starts
            except (OSError, ValueError) as e:
                raise UserError(f"--ckpt_path: {e}") from None
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        link_vocabulary(self.config[sub] if sub else self.config)

    def _check_ckpt_fits_model(self) -> None:
        """A checkpoint of another model (its weights' names differ): one line, not Lightning's
        strict-loading traceback after set-up (the names were read when the file was vetted)."""
        names = getattr(self, "_ckpt_names", None)
        if names is not None:
            from .runs import check_fits

            sub = self.config.get("subcommand")
            try:
                check_fits(Path(self.config[sub].ckpt_path), names, self.model)
            except ValueError as e:
                raise UserError(f"--ckpt_path: {e}") from None

    def before_validate(self) -> None:
        self._check_ckpt_fits_model()

    def before_test(self) -> None:
        self._check_ckpt_fits_model()

    def before_predict(self) -> None:
        self._check_ckpt_fits_model()

    def before_fit(self) -> None:
        self._check_ckpt_fits_model()
        callbacks = self.trainer.callbacks
        for callback in default_callbacks():
            if not any(isinstance(c, type(callback)) for c in callbacks):
                # before the checkpoint callbacks: a checkpoint saved at a validation's end then holds
                # what the recorders made of that validation (a resumed run keeps its whole history)
                first = next((i for i, c in enumerate(callbacks) if isinstance(c, ModelCheckpoint)), len(callbacks))
                callbacks.insert(first, callback)
        for checkpoint in self.trainer.checkpoint_callbacks:  # Lightning's default one included
            if checkpoint.save_last is None:
                checkpoint.save_last = True


def _job_parser(job) -> argparse.ArgumentParser:
    description = (job.description or job.help).strip()
    p = argparse.ArgumentParser(
        prog=job.command, description=description, epilog=f"example:\n  {job.example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job.add_arguments(p)
    return p


def _run_job(job, argv: list[str]) -> int:
    try:
        args = _job_parser(job).parse_args(argv)  # argparse: unknown option -> usage + one line, exit 2
    except SystemExit as e:  # --help (0) or a usage error (2): a status, not an exception, for callers
        return int(e.code or 0)
    try:
        rc = job(args)
    except USAGE_ERRORS as e:
        return _user_error(job.command, e)
    return int(rc or 0)


def _user_error(command: str, e: BaseException) -> int:
    """A user's mistake (a missing path, a malformed file): one line on stderr naming it, status 2;
    TESSERA_DEBUG=1 re-raises it with its traceback."""
    if os.environ.get("TESSERA_DEBUG"):
        raise e
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"{command}: error: {msg}", file=sys.stderr)
    return 2


def _listing() -> str:
    load_jobs()
    lines = ["usage: tessera <command> [options]   (tessera <command> --help for one)", "",
             "training (LightningCLI; --config a YAML under configs/):"]
    lines += [f"  {c:<10} tessera {c} --config configs/text/tiny.yaml" for c in LIGHTNING]
    for job in jobs_in(None):
        lines.append(f"  {job.name:<10} {job.help}")
    for group, text in GROUPS.items():
        lines += ["", f"{group} <what>: {text}"]
        lines += [f"  {group} {j.name:<18} {j.help}" for j in jobs_in(group)]
    return "\n".join(lines)


def _group_main(group: str, argv: list[str]) -> int:
    jobs = {j.name: j for j in jobs_in(group)}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: tessera {group} <what> [options]\n\n{GROUPS[group]}:\n")
        for j in jobs.values():
            print(f"  {j.name:<18} {j.help}\n  {'':<18} e.g. {j.example}")
        return 0 if argv else 2
    if argv[0] not in jobs:
        print(f"tessera {group}: error: unknown {group} job {argv[0]!r}; choose one of: {', '.join(jobs)}",
              file=sys.stderr)
        return 2
    return _run_job(jobs[argv[0]], argv[1:])


class _DropNoise:
    """Lightning's sales tips (logged through ``rank_zero_info``): dropped from the console."""

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Keep `tessera fit|validate|test|predict` output to what concerns the run (idempotent): the tips go
    through Lightning's rank-zero logger, the two notices below through ``warnings``."""
    import logging
    import warnings

    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in log.filters):
        log.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message="Starting from v1.9.0, `tensorboardX` has been removed")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_listing())
        return 0 if argv else 2
    head = argv[0]
    if head in LIGHTNING or head.startswith("-"):
        from .callbacks import NonFiniteLossError

        quiet_lightning()
        try:
            # from a shell, LightningCLI reads sys.argv itself (passing args too makes it warn)
            TesseraCLI(args=None if from_shell else argv)
        except USAGE_ERRORS as e:  # a missing corpus, a malformed data file: one line, not a traceback
            return _user_error(f"tessera {head}", e)
        except NonFiniteLossError as e:
            print(f"tessera {head}: stopped: {e}", file=sys.stderr)
            return 1
        return 0
    if head in GROUPS:
        return _group_main(head, argv[1:])
    top = {j.name: j for j in jobs_in(None)}
    if head in top:
        return _run_job(top[head], argv[1:])
    print(f"tessera: error: unknown command {head!r}; choose one of: {', '.join([*LIGHTNING, *top, *GROUPS])}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

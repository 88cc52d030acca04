"""A run folder in, a system out: the one way back into what ``tessera fit`` wrote.

A run's log folder (``<default_root_dir>/lightning_logs/version_N``) holds ``config.yaml`` (the
full LightningCLI config), ``checkpoints/*.ckpt`` and ``encoder/``. ``load_system(path)`` takes
that folder, its parent run folder (newest version), or a checkpoint file inside it; it rebuilds
the system from ``config.yaml`` (jsonargparse, the same parser the CLI uses) and loads the weights
with ``weights_only=True`` (or from safetensors). Nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

CONFIG = "config.yaml"


def log_dir_of(path: str | Path) -> Path:
    """The log folder (the one holding config.yaml) of a run folder, log folder or checkpoint."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; give a run folder, its lightning_logs/version_N, or a .ckpt")
    if p.is_file():
        for up in (p.parent, p.parent.parent):
            if (up / CONFIG).is_file():
                return up
        raise FileNotFoundError(f"no {CONFIG} beside {p} or one folder up; give the run's log folder "
                                "(the one `tessera fit` wrote config.yaml into)")
    versions = [v for v in p.glob("**/version_*") if (v / CONFIG).is_file()]
    if (p / CONFIG).is_file() and (_has_weights(p) or not versions):
        return p
    if not versions:
        raise FileNotFoundError(f"{p} holds no {CONFIG} (nor lightning_logs/version_N/{CONFIG}); "
                                "give the folder a `tessera fit` run wrote")
    # the newest version that kept weights (a `tessera test` with the logger off may leave a config.yaml
    # in the run's root, without checkpoints)
    return max(versions, key=lambda v: (_has_weights(v), (v / CONFIG).stat().st_mtime))


def final_weights(init_from: str | Path) -> str:
    """Where ``init_from``'s final weights are: a run or log folder whose fit ended has them in
    ``<log dir>/encoder`` (written at the end of fit), while its checkpoints/last.ckpt is only as new
    as the last checkpoint save (a run of 250 steps that saves every 150 keeps step 150 there); that
    folder is then used. An encoder folder, a checkpoint file or a run without encoder/ is kept as given."""
    path = Path(init_from).expanduser()
    if path.is_file() or (path / "config.json").is_file():
        return str(init_from)
    try:
        encoder = log_dir_of(path) / "encoder"
    except FileNotFoundError:
        return str(init_from)
    return str(encoder) if (encoder / "config.json").is_file() else str(init_from)


def _has_weights(log: Path) -> bool:
    return any((log / "checkpoints").glob("*.ckpt")) or (log / "model.safetensors").is_file()


def checkpoint_of(path: str | Path) -> Path:
    """The weights of a run: the file given, else checkpoints/last.ckpt, the newest .ckpt, or model.safetensors."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    log = log_dir_of(p)
    last = log / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    ckpts = sorted((log / "checkpoints").glob("*.ckpt"), key=lambda c: c.stat().st_mtime)
    if ckpts:
        return ckpts[-1]
    if (log / "model.safetensors").is_file():
        return log / "model.safetensors"
    raise FileNotFoundError(f"{log} has no checkpoints/*.ckpt and no model.safetensors; the run kept no weights "
                            "(train with a ModelCheckpoint callback, or use its encoder/ folder)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A system's state dict from a Lightning .ckpt (weights_only=True) or a .safetensors file."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{p} is not a readable safetensors file ({e}); re-export it or use another run") from None
    raw = _load_checkpoint(p)
    return raw.get("state_dict", raw)


def _load_checkpoint(p: Path) -> dict:
    """A .ckpt read once with weights_only=True: refused in one line if unreadable, not a dict, or its
    tensors fail their checksum / are not finite."""
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle.UnpicklingError, EOFError, RuntimeError: all mean "not a checkpoint")
        why = (str(e).splitlines() or [""])[0][:200]
        raise ValueError(f"{p} is not a readable checkpoint ({type(e).__name__}{': ' + why if why else ''}); "
                         "it is truncated, corrupt, or holds more than tensors (never unpickled here)") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p} holds a {type(raw).__name__}, not a checkpoint dict")
    verify_checkpoint(raw, p)
    return raw


def check_resumable(path: str | Path, system=None) -> set[str]:
    """Refuse, with one line naming ``path``, a checkpoint that ``--ckpt_path`` cannot restore: what
    ``read_state_dict`` refuses, a file that is not a Lightning checkpoint (a bare state dict: Lightning
    fails on its missing ``pytorch-lightning_version``), and weights whose names differ from ``system``'s.
    Returns the weights' names, so a later ``check_fits`` need not read the file again."""
    p = Path(path)
    raw = {} if p.suffix == ".safetensors" else _load_checkpoint(p)
    if "pytorch-lightning_version" not in raw:
        raise ValueError(f"{p} is not a Lightning checkpoint (no pytorch-lightning_version: a bare state dict?); "
                         "--ckpt_path takes a .ckpt that `tessera fit` wrote; use init_from for weights alone")
    names = set(raw.get("state_dict", raw))
    if system is not None:
        check_fits(p, names, system)
    return names


def check_fits(path: Path, names: set[str], system) -> None:
    """Weights named ``names`` (from ``path``) must be exactly ``system``'s."""
    want = set(system.state_dict())
    missing, unexpected = sorted(want - names), sorted(names - want)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {type(system).__name__}: missing {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                         f"{' ...' if len(unexpected) > 3 else ''}; give a checkpoint of this config's model")


def verify_checkpoint(checkpoint: dict, where) -> None:
    """A loaded checkpoint dict: its weights' checksum (when it carries one) and finiteness."""
    from modalities.hub import check_finite, tensor_checksum

    state = checkpoint.get("state_dict", checkpoint)
    expected = checkpoint.get("tessera_checksum")
    if expected is not None and tensor_checksum(state) != expected:
        raise ValueError(f"{where} does not match the checksum written with it: the file was changed or corrupted "
                         "after it was saved; use another checkpoint")
    check_finite(state, str(where))


def read_config(log: Path) -> dict:
    raw = yaml.safe_load((log / CONFIG).read_text())
    if not isinstance(raw, dict) or "model" not in raw:
        raise ValueError(f"{log / CONFIG} has no model section; it is not a `tessera fit` config")
    return raw


def instantiate(raw: dict, section: str):
    """``raw[section]`` ({class_path, init_args}) -> the object, through jsonargparse as the CLI does."""
    import lightning as L
    from jsonargparse import ArgumentError, ArgumentParser

    base = {"model": L.LightningModule, "data": L.LightningDataModule}[section]
    p = ArgumentParser(exit_on_error=False)
    p.add_subclass_arguments(base, section, required=True)
    try:
        cfg = p.parse_object({section: raw[section]})
    except (ArgumentError, TypeError, KeyError) as e:
        first = " ".join(str(e).split())[:300] or type(e).__name__
        raise ValueError(f"the run's config.yaml {section} section does not build ({first}); was it written by "
                         "another version of Tessera? rebuild with the current configs/") from None
    return getattr(p.instantiate_classes(cfg), section)


def load_system(path: str | Path, with_data: bool = False):
    """(system in eval mode, its datamodule or None, the config dict) from a run, log folder or checkpoint."""
    log = log_dir_of(path)
    raw = read_config(log)
    state = read_state_dict(checkpoint_of(path))  # first: a damaged weight file is named before anything is built
    system = instantiate(raw, "model")
    missing, unexpected = system.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint_of(path)} does not fit the system in {log / CONFIG}: "
                         f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    data = instantiate(raw, "data") if with_data and raw.get("data") else None
    return system.eval(), data, raw

"""Pretrained image towers by name, from a local Hugging Face hub cache, offline.

Names as timm and open_clip spell them:
    timm        ``resnet18.a1_in1k`` (architecture.tag, timm's own table gives the hub repo) or
                ``hf-hub:timm/resnet18.a1_in1k``; the repo holds ``config.json`` (``architecture``,
                ``pretrained_cfg`` with mean/std/input_size/crop_pct/interpolation) and
                ``model.safetensors`` (or ``pytorch_model.bin``)
    open_clip   ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` or a built-in
                ``ViT-B-32.laion2b_s34b_b79k``; the repo holds ``open_clip_config.json``
                (``model_cfg`` with ``embed_dim`` / ``vision_cfg``, ``preprocess_cfg`` with mean/std/size/
                interpolation/resize_mode) and ``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``)

Files are looked up in the hub cache layout (``models--org--name/refs/main`` ->
``snapshots/<hash>/<file>``) with ``huggingface_hub.try_to_load_from_cache``: nothing is fetched,
whatever ``HF_HUB_OFFLINE`` says. The cache is ``cache_dir``, else ``$HF_HUB_CACHE``, else
huggingface_hub's default (``$HF_HOME/hub``). Layouts read from timm's ``_hub.py`` / ``_builder.py``
(``config.json`` with ``pretrained_cfg``) and open_clip's ``factory.py`` / ``pretrained.py``
(``open_clip_config.json``, ``HF_WEIGHTS_NAME`` / ``HF_SAFE_WEIGHTS_NAME``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..hub import read_json_object

HF_HUB_PREFIX = "hf-hub:"
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's defaults when preprocess_cfg says nothing
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class PretrainedTower:
    """What a pretrained name resolves to: how to build it, its weights, its own preprocessing."""

    source: str  # "timm" | "open_clip"
    repo: str  # the hub repo the files came from
    architecture: str  # timm model name, or the open_clip model name (informative for hf-hub configs)
    weights: Path
    preprocess: dict  # {"image_size", "mean", "std", "interpolation", "crop_pct" | "resize_mode"}
    model_cfg: dict = field(default_factory=dict)  # open_clip: {"embed_dim", "vision_cfg", "quick_gelu"}


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(repo: str, filenames: tuple[str, ...] | str, cache_dir: Path, name: str, required: bool = True) -> Path | None:
    """The first of ``filenames`` that the cache holds for ``repo`` (its ``main`` snapshot)."""
    from huggingface_hub import try_to_load_from_cache

    filenames = (filenames,) if isinstance(filenames, str) else filenames
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    if not required:
        return None
    folder = cache_dir / f"models--{repo.replace('/', '--')}"
    where = "has no snapshot for it" if not folder.is_dir() else f"has {folder.name} but none of {list(filenames)}"
    raise FileNotFoundError(f"pretrained {name!r}: the HF cache {cache_dir} {where}; on a machine with internet run "
                            f"`hf download {repo}` and copy its cache here (or set HF_HUB_CACHE / cache_dir)")


def _read_json(path: Path) -> dict:
    return read_json_object(path, "the cached file is corrupt: download it again")


def _size(value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int):
        return value
    return int(value[-1])  # timm input_size (C, H, W); open_clip size (H, W)


def resolve_timm(name: str, cache_dir: str | Path | None = None) -> PretrainedTower:
    import timm

    cache = hub_cache(cache_dir)
    if name.startswith(HF_HUB_PREFIX):
        repo, table_cfg = name[len(HF_HUB_PREFIX):], None
    else:
        try:
            table_cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
        except Exception:  # noqa: BLE001  (timm raises RuntimeError / KeyError by version)
            table_cfg = None
        if table_cfg is None or not table_cfg.hf_hub_id:
            raise ValueError(f"timm has no pretrained weights named {name!r} on the HF hub; give architecture.tag "
                             "(e.g. resnet18.a1_in1k, see timm.list_pretrained()) or hf-hub:org/name")
        repo = table_cfg.hf_hub_id
    cfg_path = cached_file(repo, "config.json", cache, name, required=table_cfg is None)
    hub_cfg = _read_json(cfg_path) if cfg_path is not None else {}
    pre = dict(hub_cfg.get("pretrained_cfg") or {})
    if table_cfg is not None:
        pre = {**table_cfg.to_dict(), **pre}
    architecture = hub_cfg.get("architecture") or timm.models.split_model_name_tag(name)[0]
    if architecture not in timm.list_models():
        raise ValueError(f"pretrained {name!r} names timm architecture {architecture!r}, which this timm does not have")
    for key in ("mean", "std"):
        if not pre.get(key):
            raise ValueError(f"pretrained {name!r}: its pretrained_cfg has no {key}; the tower's preprocessing is unknown")
    preprocess = {"image_size": _size(pre.get("input_size"), 224), "mean": list(pre["mean"]), "std": list(pre["std"]),
                  "interpolation": pre.get("interpolation", "bicubic"), "crop_pct": pre.get("crop_pct", 0.875),
                  "classifier": pre.get("classifier", "head")}
    return PretrainedTower("timm", repo, architecture, cached_file(repo, TIMM_WEIGHTS, cache, name), preprocess)


def resolve_open_clip(name: str, cache_dir: str | Path | None = None) -> PretrainedTower:
    cache = hub_cache(cache_dir)
    if name.startswith(HF_HUB_PREFIX):
        repo = name[len(HF_HUB_PREFIX):]
        raw = _read_json(cached_file(repo, "open_clip_config.json", cache, name))
        if "model_cfg" not in raw:
            raise ValueError(f"pretrained {name!r}: open_clip_config.json has no model_cfg; it is not an open_clip repo")
        model_cfg, pre, architecture = raw["model_cfg"], raw.get("preprocess_cfg") or {}, repo.split("/")[-1]
        weights = cached_file(repo, OPEN_CLIP_WEIGHTS, cache, name)
    else:
        import open_clip

        architecture, _, tag = name.partition(".")
        cfg = open_clip.get_pretrained_cfg(architecture, tag) if tag else {}
        if not cfg.get("hf_hub"):
            raise ValueError(f"open_clip has no hub-hosted weights named {name!r}; give model.tag (see "
                             "open_clip.list_pretrained()) or hf-hub:org/name")
        parts = cfg["hf_hub"].split("/")  # "org/repo/" or "org/repo/filename"
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        model_cfg = open_clip.get_model_config(architecture)
        if model_cfg is None:
            raise ValueError(f"open_clip has no model config {architecture!r}")
        pre = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        weights = cached_file(repo, (filename,) if filename else OPEN_CLIP_WEIGHTS, cache, name)
    vision = model_cfg.get("vision_cfg") or {}
    preprocess = {"image_size": _size(pre.get("size"), _size(vision.get("image_size"), 224)),
                  "mean": list(pre.get("mean") or OPENAI_MEAN), "std": list(pre.get("std") or OPENAI_STD),
                  "interpolation": pre.get("interpolation", "bicubic"), "resize_mode": pre.get("resize_mode", "shortest")}
    return PretrainedTower("open_clip", repo, architecture, weights, preprocess, model_cfg)


def resolve_pretrained(name: str, source: str, cache_dir: str | Path | None = None) -> PretrainedTower:
    if source == "timm":
        return resolve_timm(name, cache_dir)
    if source == "open_clip":
        return resolve_open_clip(name, cache_dir)
    raise ValueError(f"pretrained towers come from 'timm' or 'open_clip', not {source!r}")


def read_weights(path: Path) -> dict[str, Tensor]:
    """A safetensors file, or a .bin read with ``weights_only=True`` (never unpickled); the
    ``state_dict`` / ``model`` wrappers some checkpoints carry are unwrapped."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}); download it again") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (UnpicklingError, EOFError, RuntimeError)
        raise ValueError(f"{path} is not a readable tensor file ({type(e).__name__}); it is corrupt or holds more "
                         "than tensors (never unpickled here)") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}

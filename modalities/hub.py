"""The one entry for pretrained towers: ``load_encoder(path)``; and the Tessera checkpoint folder.

A Tessera checkpoint folder holds ``config.json`` ({"format": "tessera", "architecture",
"config", "meta"}) and ``model.safetensors``. Foreign folders (HF BERT, RoBERTa, ...) are
recognised by their config's ``model_type`` and converted by a registered importer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .registry import Registry

FORMAT = "tessera"
WEIGHTS = "model.safetensors"
# architecture name -> (encoder class, config class); each encoder registers itself where defined
ARCHITECTURES: Registry[tuple[type[nn.Module], type]] = Registry("encoder architecture")
# HF config "model_type" -> function(folder) -> (encoder, meta dict)
IMPORTERS: Registry[Callable[[Path], tuple[nn.Module, dict]]] = Registry("checkpoint importer (model_type)")
# folders with no config.json, recognised by their files (a TF checkpoint bundle, ...):
# name -> (recognises(folder) -> bool, load(folder) -> encoder with .meta)
FOLDER_IMPORTERS: Registry[tuple[Callable[[Path], bool], Callable[[Path], nn.Module]]] = Registry(
    "folder importer")
# preset name -> function() -> config of a registered architecture (every modality's named sizes)
PRESETS: Registry[Callable[[], object]] = Registry("encoder preset")


# HF config "model_type" -> function(folder, imported encoder) -> max |ours - reference| on a test batch
PARITY: Registry[Callable[[Path, nn.Module], float]] = Registry("parity check (model_type)")


def register_parity(*model_types: str) -> Callable[[Callable], Callable]:
    """Function decorator: the check ``tessera import --check`` runs for these model types,
    comparing the imported encoder with the reference implementation (transformers) on one batch."""

    def deco(fn: Callable) -> Callable:
        for t in model_types:
            PARITY.register(t)(fn)
        return fn

    return deco


def check_parity(src: str | Path, encoder: nn.Module) -> float:
    """Max abs difference of ``encoder`` from the reference implementation of ``src``'s model type."""
    model_type = read_config(Path(src)).get("model_type")
    if model_type not in PARITY:
        raise ValueError(f"no reference implementation to check {model_type or 'a Tessera folder'!r} against; "
                         f"--check covers: {', '.join(PARITY.names())}")
    with torch.no_grad():
        return float(PARITY.get(model_type)(Path(src), encoder.eval()))


def register_architecture(config_cls: type) -> Callable[[type], type]:
    """Class decorator: ``@register_architecture(TokenEncoderConfig) class TokenEncoder`` makes
    ``load_encoder`` / ``save_encoder`` / ``create_encoder`` know it by its ``architecture`` name."""

    def deco(cls: type) -> type:
        ARCHITECTURES.register(cls.architecture)((cls, config_cls))
        return cls

    return deco


def register_importer(*model_types: str) -> Callable[[Callable], Callable]:
    """Function decorator: ``@register_importer("bert", "roberta") def load_hf_bert(folder)``."""

    def deco(fn: Callable) -> Callable:
        for t in model_types:
            IMPORTERS.register(t)(fn)
        return fn

    return deco


def register_folder_importer(name: str, recognises: Callable[[Path], bool]) -> Callable[[Callable], Callable]:
    """Function decorator for a release that ships no config.json: ``load(folder)`` (returning the
    encoder with its ``.meta``) is used when ``recognises(folder)`` says the files are its format."""

    def deco(fn: Callable) -> Callable:
        FOLDER_IMPORTERS.register(name)((recognises, fn))
        return fn

    return deco


def _folder_importer(folder: Path) -> Callable[[Path], nn.Module] | None:
    if (folder / "config.json").is_file():
        return None
    for name in FOLDER_IMPORTERS.names():
        recognises, load = FOLDER_IMPORTERS.get(name)
        if recognises(folder):
            return load
    return None


def create_encoder(name: str, **overrides) -> nn.Module:
    """A fresh encoder of a named preset (``bert-base``, ``mert-v1-95m``, ...); ``overrides`` replace
    config fields. ``PRESETS.names()`` lists them."""
    from dataclasses import replace

    config = replace(PRESETS.get(name)(), **overrides)
    for cls, config_cls in (ARCHITECTURES.get(a) for a in ARCHITECTURES.names()):
        if type(config) is config_cls:
            return cls(config)
    raise ValueError(f"preset {name!r} gives a {type(config).__name__}, which no registered architecture takes")
# tokenizer files copied along by `tessera import`, so a converted folder is self-contained
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
    "merges.txt", "vocab.json",
)


def read_config(folder: Path) -> dict:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        also = f", or a release recognised by its files ({', '.join(FOLDER_IMPORTERS.names())})" \
            if FOLDER_IMPORTERS.names() else ""
        raise FileNotFoundError(
            f"{folder} has no config.json: give a Tessera checkpoint folder or an HF model folder{also}"
        )
    return read_json_object(cfg_path, "it is not a model config")


def read_json_object(path: Path, what: str = "") -> dict:
    """A JSON file that must hold an object; one line naming ``path`` otherwise (``what``: the hint)."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}" + (f"; {what}" if what else "")) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object" + (f"; {what}" if what else ""))
    return raw


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin loaded with weights_only=True (never unpickled)."""
    st = folder / WEIGHTS
    if st.is_file():
        try:
            return load_file(st)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{st} is not a readable safetensors file ({e}); the file is truncated or "
                             "corrupt: export or download it again") from None
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        try:
            return torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (UnpicklingError, EOFError, RuntimeError: none is a state dict)
            raise ValueError(f"{bin_path} is not a readable tensor file ({type(e).__name__}); it is corrupt, or holds "
                             "more than tensors (never unpickled here): convert it to model.safetensors") from None
    raise FileNotFoundError(f"{folder} holds neither {WEIGHTS} nor pytorch_model.bin")


def tensor_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: what an encoder folder's
    config.json and a Tessera checkpoint carry, so that a flipped byte is seen at load."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN / inf weights, naming the first tensor that holds them."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{where}: tensor {name!r} holds {bad} non-finite values (NaN or inf); the weights are "
                             "corrupt or the run diverged: use an earlier checkpoint")


def load_encoder(path: str | Path, attention_backend: str | None = None) -> nn.Module:
    """Load a pretrained tower: a Tessera checkpoint folder or a recognised foreign folder.

    ``attention_backend`` overrides the stored one (weights are identical across backends).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; load_encoder expects a checkpoint folder")
    load_folder = _folder_importer(folder)
    raw = {} if load_folder is not None else read_config(folder)
    if load_folder is not None:  # a release without config.json, recognised by its files
        try:
            encoder = load_folder(folder)
        except (KeyError, TypeError, RuntimeError, OSError) as e:
            raise ValueError(f"{folder}: {' '.join(str(e).split())[:300] or type(e).__name__}") from None
    elif raw.get("format") == FORMAT:
        encoder = _build_tessera(folder, raw)
        state = read_state_dict(folder)
        expected = (raw.get("checksum") or {}).get("sha256")
        if expected is not None and tensor_checksum(state) != expected:
            raise ValueError(f"{folder / WEIGHTS} does not match the checksum in its config.json: the file was "
                             "changed or corrupted after it was written; export or copy it again")
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:  # missing / unexpected keys, shapes that differ from config.json's
            raise ValueError(f"{folder / WEIGHTS} does not fit the {raw['architecture']} its config.json describes "
                             f"({_first_problem(e)}); the two files come from different models: export it again") from None
        encoder.meta = raw.get("meta", {})
    elif "model_type" in raw:
        if raw["model_type"] not in IMPORTERS:
            raise ValueError(f"{folder / 'config.json'}: unknown checkpoint importer (model_type) "
                             f"{raw['model_type']!r}; choose one of: {', '.join(IMPORTERS.names())}")
        try:
            encoder, meta = IMPORTERS.get(raw["model_type"])(folder)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise _refusal(e, folder, raw["model_type"]) from None
        encoder.meta = meta
    else:
        raise ValueError(
            f"{folder}/config.json is neither a Tessera checkpoint (format: {FORMAT!r}) nor an HF "
            f"config with a model_type; known model types: {IMPORTERS.names()}"
        )
    check_finite(encoder.state_dict(), str(folder))
    if attention_backend is not None:
        encoder.set_attention_backend(attention_backend)
    return encoder.eval()


def _build_tessera(folder: Path, raw: dict) -> nn.Module:
    """The (untrained) encoder a Tessera config.json describes; a clear error naming the file otherwise."""
    cfg_path = folder / "config.json"
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{cfg_path}: unknown encoder architecture {arch!r}; choose one of: "
                         f"{', '.join(ARCHITECTURES.names())} (is the module that defines it imported?)")
    if not isinstance(raw.get("config"), dict):
        raise ValueError(f"{cfg_path} has no \"config\" object for its {arch}; the file is incomplete: export it again")
    cls, config_cls = ARCHITECTURES.get(arch)
    try:
        return cls(config_cls.from_dict(raw["config"]))
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        raise ValueError(f"{cfg_path}: its {arch} config does not build ({msg}); export it again") from None


def _refusal(e: Exception, folder: Path, model_type: str) -> Exception:
    """An importer's error as one line naming the folder, still of its own type (callers match KeyError /
    RuntimeError) and a ValueError too (the CLI prints a ValueError as a user's mistake, not a traceback)."""
    raw = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    if isinstance(e, KeyError) and raw and " " not in raw:  # a bare missing name: a config field or a tensor
        msg = f"{folder}: the {model_type} importer needs {raw!r} (a config.json field or a weight name), which is not there"
    else:
        msg = " ".join(str(raw).split())[:600] or type(e).__name__
        msg = msg if str(folder) in msg else f"{folder}: {msg}"
    if isinstance(e, ValueError):
        return type(e)(msg) if type(e).__init__ is ValueError.__init__ else ValueError(msg)
    try:
        cls = type(type(e).__name__, (ValueError, type(e)), {"__str__": BaseException.__str__,
                                                             "__module__": type(e).__module__})
        return cls(msg)
    except TypeError:  # an exception type that cannot be combined with ValueError
        return ValueError(msg)


def _first_problem(e: RuntimeError) -> str:
    """The first concrete line of a load_state_dict error (which lists every key over many lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__)[:200]


def save_encoder(encoder: nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write a Tessera checkpoint folder: config.json + model.safetensors."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    arch = encoder.architecture
    if ARCHITECTURES.get(arch)[0] is not type(encoder):
        raise ValueError(f"{type(encoder).__name__} is not registered as architecture {arch!r}")
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    raw = {"format": FORMAT, "architecture": arch, "config": encoder.config.to_dict(), "meta": meta or {},
           "checksum": {"sha256": tensor_checksum(state)}}
    # weights first, config.json last, each through a temporary name: an interrupted save never
    # leaves a folder whose config.json promises weights that are not all there
    save_file(state, folder / (WEIGHTS + ".partial"))
    (folder / (WEIGHTS + ".partial")).replace(folder / WEIGHTS)
    (folder / "config.json.partial").write_text(json.dumps(raw, indent=2) + "\n")
    (folder / "config.json.partial").replace(folder / "config.json")
    return folder


def import_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """`tessera import SRC DST`: convert a foreign folder (strict key mapping) into a Tessera folder."""
    encoder = load_encoder(src)
    out = save_encoder(encoder, dst, meta=getattr(encoder, "meta", {}))
    for f in Path(src).iterdir():  # the tokenizer files, and a release's own vocabulary (CuBERT's *vocab*.txt)
        if f.is_file() and (f.name in TOKENIZER_FILES or ("vocab" in f.name and f.suffix == ".txt")):
            shutil.copy2(f, out / f.name)
    return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

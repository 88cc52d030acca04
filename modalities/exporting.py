"""Export formats: an encoder folder -> the folder a peer library loads.

Exporters live beside the importers of their model family (``modalities/backbone/hf_export.py``
writes transformers and sentence-transformers folders) and register by name:

    @register_exporter("hf", help="a transformers BertModel / RobertaModel folder")
    def write_hf(src: Path, out: Path, **options) -> Path: ...

``src`` is an encoder folder that ``modalities.load_encoder`` reads (config.json, model.safetensors
and its assets: tokenizer, item-id map, feature settings); ``options`` carries the export command's
format options (e.g. ``max_seq_length``), which an exporter that needs none ignores. An encoder the
format cannot hold is refused with a ValueError that names the folder and the formats that fit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .registry import Registry

EXPORTERS: Registry[Callable[..., Path]] = Registry("export format")
EXPORT_HELP: dict[str, str] = {}  # format -> one line for `tessera export --help`


def register_exporter(name: str, help: str) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Function decorator: ``fn(src, out, **options) -> out`` writes format ``name``."""

    def deco(fn: Callable[..., Path]) -> Callable[..., Path]:
        EXPORTERS.register(name)(fn)
        EXPORT_HELP[name] = help
        return fn

    return deco


def export_folder(src: str | Path, out: str | Path, format: str, **options) -> Path:
    """Write the encoder folder ``src`` as ``format`` into ``out``; returns ``out``."""
    return Path(EXPORTERS.get(format)(Path(src), Path(out), **options))

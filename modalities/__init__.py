"""Tessera's pure-PyTorch side: the shared backbone and one folder per modality.

Nothing in this package imports lightning.
"""

from . import audio as _audio  # noqa: F401,I001  (registers the audio encoder and the "mert_model" importer)
from . import cxr as _cxr  # noqa: F401, E402  (registers "llm2vec" and the llama/qwen2/mistral importers)
from .cxr import open_clip_export as _open_clip_export  # noqa: F401, E402  (registers the "open_clip" exporter)
from . import recsys as _recsys  # noqa: F401, E402  (registers the "bert4rec" architecture)
from .code import cubert as _cubert  # noqa: F401, E402  (registers the "cubert-tf" folder importer)
from .backbone import (
    Backbone,
    BackboneConfig,
    Encoder,
    EncoderOutput,
    TokenEncoder,
    TokenEncoderConfig,
    create_encoder,
)
from .backbone import hf_bert as _hf_bert  # noqa: F401  (registers the "bert"/"roberta"/"xlm-roberta" importers)
from .backbone import hf_modernbert as _hf_modernbert  # noqa: F401  (registers the "modernbert" importer)
from .backbone import hf_export as _hf_export  # noqa: F401  (registers the "hf" and "sentence-transformers" exporters)
from .hub import import_checkpoint, load_encoder, save_encoder

__all__ = [
    "Backbone", "BackboneConfig", "Encoder", "EncoderOutput", "TokenEncoder", "TokenEncoderConfig",
    "create_encoder", "import_checkpoint", "load_encoder", "save_encoder",
]

"""Chest X-ray image and report towers: OpenI/MIMIC/CheXpert readers, report styles, DICOM/PNG
preprocessing, LLM2Vec text encoders, BERT text towers, timm/open_clip image towers, the dual tower.

Importing this package registers the ``llm2vec`` architecture and the decoder importers
(``llama``, ``qwen2``, ``mistral``) with ``modalities.load_encoder``.
"""

from ..backbone.pooling import POOLERS, create_pooler
from . import cxr_bert as _cxr_bert  # noqa: F401  (registers the "cxr-bert" importer and architecture)
from . import llm2clip_hf as _llm2clip_hf  # noqa: F401  (registers the "clip" importer: LLM2CLIP's HF releases)
from .dual import DualTower, TextAdapter, load_dual_tower, save_dual_tower
from .images import CXRTransform, load_image_tensor, read_bitmap, read_dicom, read_image
from .llm2vec import (
    DECODER_TYPES,
    LLM2VecConfig,
    LLM2VecEncoder,
    import_llm2vec,
    load_llm2vec,
    tiny_decoder,
)
from .reports import Report, read_chexpert_csv, read_mimic_cxr, read_openi, split_of
from .styles import STYLES, abbreviate, reword_negations
from .towers import ImageTower, TextTower

__all__ = [
    "DECODER_TYPES", "CXRTransform", "DualTower", "ImageTower", "LLM2VecConfig", "LLM2VecEncoder", "POOLERS", "Report",
    "STYLES", "TextAdapter", "TextTower", "abbreviate", "create_pooler", "import_llm2vec", "load_dual_tower", "load_image_tensor",
    "load_llm2vec", "read_bitmap", "read_chexpert_csv", "read_dicom", "read_image", "read_mimic_cxr", "read_openi",
    "reword_negations", "save_dual_tower", "split_of", "tiny_decoder",
]

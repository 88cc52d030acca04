"""The shared BERT-style backbone: config, attention backends, padding, positions, blocks."""

from .attention import ATTENTION, AttentionInputs, SelfAttention
from .backbone import Backbone, EncoderOutput
from .config import BackboneConfig, TokenEncoderConfig
from .embeddings import TokenFrontend
from .encoder import Encoder, TokenEncoder, init_weights
from .heads import MaskedLMHead
from .pooling import POOLERS, create_pooler
from .presets import PRESETS, create_encoder

__all__ = [
    "ATTENTION", "AttentionInputs", "Backbone", "BackboneConfig", "Encoder", "EncoderOutput",
    "MaskedLMHead", "POOLERS", "PRESETS", "SelfAttention", "TokenEncoder", "TokenEncoderConfig",
    "TokenFrontend", "create_encoder", "create_pooler", "init_weights",
]

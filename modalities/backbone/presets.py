"""Named token-encoder sizes (timm's registry habit), in the one preset registry every modality
shares: ``modalities.create_encoder("bert-base")``."""

from __future__ import annotations

from ..hub import PRESETS, create_encoder
from .config import TokenEncoderConfig

__all__ = ["PRESETS", "create_encoder"]


@PRESETS.register("bert-tiny")
def bert_tiny() -> TokenEncoderConfig:
    # tests and demos: 2 layers x 128
    return TokenEncoderConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512)


@PRESETS.register("minilm")
def minilm() -> TokenEncoderConfig:
    # all-MiniLM-L6-v2's shape
    return TokenEncoderConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)


@PRESETS.register("bert-base")
def bert_base() -> TokenEncoderConfig:
    return TokenEncoderConfig()


@PRESETS.register("bert-large")
def bert_large() -> TokenEncoderConfig:
    # CuBERT's size
    return TokenEncoderConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)


@PRESETS.register("mosaic-bert-base")
def mosaic_bert_base() -> TokenEncoderConfig:
    # MosaicBERT: ALiBi, GeGLU, unpadded attention, no dropout on attention probabilities
    return TokenEncoderConfig(
        position="alibi", activation="geglu", attention_backend="unpadded", attention_dropout=0.0
    )


@PRESETS.register("modern-bert-base")
def modern_bert_base() -> TokenEncoderConfig:
    # answerdotai/ModernBERT-base: 22 pre-LN layers (layer 0 without its attention norm), GeGLU, no
    # biases anywhere, RoPE 160k on the global layers (every third) and 10k on the local ones, which
    # attend within 64 positions either side
    return TokenEncoderConfig(
        num_layers=22, position="rope", norm="pre", activation="geglu", intermediate_size=1152, bias=False,
        norm_bias=False, first_layer_attn_norm=False, layer_norm_eps=1e-5, hidden_dropout=0.0,
        attention_dropout=0.0, attention_backend="unpadded", rope_theta=160000.0, local_rope_theta=10000.0,
        local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=8192, vocab_size=50368,
        type_vocab_size=0, pad_token_id=50283,
    )

"""Import ModernBERT checkpoints (``model_type`` "modernbert": answerdotai/ModernBERT-base and
-large, and models fine-tuned from them) into a TokenEncoder.

ModernBERT on the shared backbone: pre-LN with the first layer's attention norm left out (its
embeddings are normalised), bias-free linears and LayerNorms, GeGLU, RoPE with one base for the
global layers (160,000) and another for the local ones (10,000), and local layers that attend
within ``local_attention // 2`` positions either side, every ``global_attn_every_n_layers``-th
layer global. Both config formats are read: the release's (``global_attn_every_n_layers``,
``global_rope_theta``, ``local_rope_theta``) and transformers 5's (``layer_types``,
``rope_parameters``). Every key is mapped or dropped with its reason (``KEYS``).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from ..hub import read_config, read_state_dict, register_importer, register_parity
from ..importing import KeyMap
from .config import TokenEncoderConfig
from .encoder import TokenEncoder

_L = r"layers\.(\d+)\."
RENAMES = [
    (r"embeddings\.tok_embeddings\.weight", "frontend.word_embeddings.weight"),
    (r"embeddings\.norm\.(weight|bias)", "frontend.norm.{0}"),
    (_L + r"attn\.Wqkv\.(weight|bias)", "backbone.layers.{0}.attn.qkv.{1}"),  # already fused [q; k; v]
    (_L + r"attn\.Wo\.(weight|bias)", "backbone.layers.{0}.attn.out.{1}"),
    (_L + r"attn_norm\.(weight|bias)", "backbone.layers.{0}.attn_norm.{1}"),
    (_L + r"mlp\.Wi\.(weight|bias)", "backbone.layers.{0}.mlp.fc1.{1}"),  # [input; gate]: act(first) * second
    (_L + r"mlp\.Wo\.(weight|bias)", "backbone.layers.{0}.mlp.fc2.{1}"),
    (_L + r"mlp_norm\.(weight|bias)", "backbone.layers.{0}.mlp_norm.{1}"),
    (r"final_norm\.(weight|bias)", "backbone.final_norm.{0}"),
]
DROPPED = {
    r"^(head|decoder)\.": "ModernBertForMaskedLM's prediction head and decoder: a task head, not the encoder",
    r"^(classifier|drop|dense)\.": "a fine-tuning head (sequence / token classification), not the encoder",
}
KEYS = KeyMap(RENAMES, DROPPED, strip=lambda k: re.sub(r"^model\.", "", k))
_ACTS = {"gelu": "geglu", "gelu_python": "geglu", "silu": "swiglu", "swish": "swiglu"}


def _every_n(layer_types: list[str]) -> int:
    """The n of a layer_types list that is "full" at 0, n, 2n, ... and "sliding" elsewhere."""
    full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
    for n in range(1, len(layer_types) + 1):
        if full == list(range(0, len(layer_types), n)):
            return n
    raise ValueError(f"modernbert layer_types {layer_types} is not 'global every n-th layer from layer 0'; "
                     "that pattern is all the backbone offers")


def config_from_hf(hf: dict) -> TokenEncoderConfig:
    act = hf.get("hidden_activation", "gelu")
    if act not in _ACTS:
        raise ValueError(f"modernbert checkpoint uses hidden_activation={act!r}; supported: {sorted(_ACTS)}")
    if hf.get("attention_bias", False) != hf.get("mlp_bias", False):
        raise ValueError("modernbert checkpoint has attention_bias != mlp_bias; the backbone has one bias switch")
    layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    every = _every_n(types) if types else int(hf.get("global_attn_every_n_layers", 3))
    rope = hf.get("rope_parameters") or {}
    global_theta = (rope.get("full_attention") or {}).get("rope_theta", hf.get("global_rope_theta", 160000.0))
    local_theta = (rope.get("sliding_attention") or {}).get("rope_theta", hf.get("local_rope_theta", 10000.0))
    for kind, params in rope.items():
        if params and params.get("rope_type", "default") != "default":
            raise ValueError(f"modernbert checkpoint scales RoPE ({kind}: {params['rope_type']}); only 'default' imports")
    return TokenEncoderConfig(
        hidden_size=hf["hidden_size"], num_layers=layers, num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], activation=_ACTS[act], position="rope",
        max_position_embeddings=hf.get("max_position_embeddings", 8192), rope_theta=float(global_theta),
        local_rope_theta=float(local_theta), norm="pre", layer_norm_eps=hf.get("norm_eps", 1e-5),
        hidden_dropout=0.0, attention_dropout=hf.get("attention_dropout", 0.0), bias=bool(hf.get("mlp_bias", False)),
        norm_bias=bool(hf.get("norm_bias", False)), first_layer_attn_norm=False,
        local_attention=int(hf.get("local_attention", 128)), global_attn_every_n_layers=every,
        initializer_range=hf.get("initializer_range", 0.02), vocab_size=hf["vocab_size"], type_vocab_size=0,
        pad_token_id=hf.get("pad_token_id", 50283) or 0, embedding_norm=True,
    )


dropped_keys = KEYS.dropped_keys


def convert_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF ModernBERT state dict -> TokenEncoder state dict. Raises on any unexplained key."""
    return KEYS.convert(state_dict)


@register_importer("modernbert")
def load_hf_modernbert(folder: Path) -> tuple[TokenEncoder, dict]:
    hf = read_config(folder)
    config = config_from_hf(hf)
    encoder = TokenEncoder(config)
    raw = read_state_dict(folder)
    encoder.load_state_dict(convert_state_dict(raw), strict=True)
    meta = {"source": str(folder), "model_type": "modernbert", "name": hf.get("_name_or_path", ""),
            "dropped": dropped_keys(raw), "pooling": hf.get("classifier_pooling", "cls")}
    return encoder, meta


@register_parity("modernbert")
def modernbert_parity(folder: Path, encoder: TokenEncoder) -> float:
    """The last hidden state of a ragged batch longer than the local window, real tokens only,
    against transformers' ModernBertModel (sdpa)."""
    import torch
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(0)
    window = encoder.config.local_attention
    lengths = [window + 37, 9, window // 2 + 3]
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    ids = torch.randint(0, encoder.config.vocab_size, mask.shape, generator=g).masked_fill(~mask, encoder.config.pad_token_id)
    ours = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    return float((ours - theirs)[mask].abs().max())

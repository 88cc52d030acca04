"""Import HF BERT / RoBERTa checkpoints (``model_type`` "bert" or "roberta") into a TokenEncoder.

Two pure functions and a loader:
    config_from_hf(hf_config) -> TokenEncoderConfig
    convert_state_dict(state_dict, config) -> state_dict   (rename table + fused QKV)
Every key is either mapped, or dropped by a named rule in ``DROPPED`` with the reason; any
other key is an error that names it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ..hub import IMPORTERS, read_config, read_state_dict
from .config import TokenEncoderConfig
from .encoder import TokenEncoder

_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

# keys that exist in HF checkpoints but not in a Tessera encoder, and why
DROPPED = {
    r"^pooler\.": "BERT's [CLS] pooler (dense + tanh, trained for NSP): a task head, not the encoder",
    r"^embeddings\.position_ids$": "buffer holding arange(max_positions); positions are computed",
    r"^embeddings\.token_type_ids$": "buffer of zeros; token types default to 0",
    r"^cls\.": "pretraining heads (MLM decoder, NSP classifier): task heads, not the encoder",
    r"^lm_head\.": "RoBERTa's MLM head: a task head, not the encoder",
}

# (HF pattern, Tessera name); {i} is the layer index
RENAMES = [
    (r"embeddings\.word_embeddings\.weight", "frontend.word_embeddings.weight"),
    (r"embeddings\.position_embeddings\.weight", "frontend.position_embeddings.weight"),
    (r"embeddings\.token_type_embeddings\.weight", "frontend.token_type_embeddings.weight"),
    (r"embeddings\.LayerNorm\.(weight|bias)", "frontend.norm.{0}"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", "backbone.layers.{0}.attn.out.{1}"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)", "backbone.layers.{0}.attn_norm.{1}"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", "backbone.layers.{0}.mlp.fc1.{1}"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", "backbone.layers.{0}.mlp.fc2.{1}"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)", "backbone.layers.{0}.mlp_norm.{1}"),
]
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)")


def config_from_hf(hf: dict) -> TokenEncoderConfig:
    model_type = hf.get("model_type")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ValueError(f"{model_type} checkpoint uses position_embedding_type={pos!r}; only 'absolute' imports")
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise ValueError(f"{model_type} checkpoint uses hidden_act={act!r}; supported: {sorted(_ACTS)}")
    pad = hf.get("pad_token_id") or 0
    return TokenEncoderConfig(
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        activation=_ACTS[act],
        position="absolute",
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        norm="post",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        vocab_size=hf["vocab_size"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        pad_token_id=pad,
        # RoBERTa numbers positions from padding_idx + 1
        position_offset=pad + 1 if model_type == "roberta" else 0,
    )


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^(bert|roberta)\.", "", k)
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)  # TF-era names
        k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
        out[k] = v
    return out


def dropped_keys(state_dict: dict[str, Tensor]) -> dict[str, str]:
    """The checkpoint keys that the conversion drops, each with its reason."""
    return {
        key: reason
        for key in _strip_prefix(state_dict)
        for pattern, reason in DROPPED.items()
        if re.search(pattern, key)
    }


def convert_state_dict(state_dict: dict[str, Tensor], config: TokenEncoderConfig) -> dict[str, Tensor]:
    """HF BERT/RoBERTa state dict -> TokenEncoder state dict. Raises on any unexplained key."""
    sd = _strip_prefix(state_dict)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    unknown = []
    for key, value in sd.items():
        if any(re.search(p, key) for p in DROPPED):
            continue
        if m := _QKV.fullmatch(key):
            layer, which, kind = m.groups()
            qkv.setdefault((int(layer), kind), {})[which] = value
            continue
        if (name := rename(key, RENAMES)) is not None:
            out[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(
            f"{len(unknown)} checkpoint keys are neither mapped nor on the drop list: {unknown[:10]}"
        )
    fuse_qkv(qkv, ("query", "key", "value"), out)
    if config.type_vocab_size == 0:
        out.pop("frontend.token_type_embeddings.weight", None)
    return out


def rename(key: str, renames) -> str | None:
    """The new name of ``key`` under the first (regex, format) pair of ``renames`` that matches it."""
    for pattern, target in renames:
        if m := re.fullmatch(pattern, key):
            return target.format(*m.groups())
    return None


def fuse_qkv(qkv: dict, names: tuple[str, str, str], out: dict) -> None:
    """{(layer, "weight"|"bias"): {name: tensor}} -> out["backbone.layers.L.attn.qkv.*"], rows [q; k; v].

    ``names`` are the checkpoint's spellings of query, key and value, in that order.
    """
    for (layer, kind), parts in sorted(qkv.items()):
        missing = set(names) - set(parts)
        if missing:
            raise KeyError(f"layer {layer} attention {kind} lacks {sorted(missing)}")
        # fused projection: rows [query; key; value], as SelfAttention.qkv expects
        out[f"backbone.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in names], dim=0)


def load_hf_bert(folder: Path) -> tuple[TokenEncoder, dict]:
    hf = read_config(folder)
    config = config_from_hf(hf)
    encoder = TokenEncoder(config)
    raw = read_state_dict(folder)
    encoder.load_state_dict(convert_state_dict(raw, config), strict=True)
    meta = {
        "source": str(folder),
        "model_type": hf["model_type"],
        "name": hf.get("_name_or_path", ""),
        "dropped": dropped_keys(raw),
    }
    return encoder, meta


IMPORTERS.register("bert")(load_hf_bert)
IMPORTERS.register("roberta")(load_hf_bert)

"""Import HF BERT / RoBERTa checkpoints (``model_type`` "bert" or "roberta") into a TokenEncoder.

Two pure functions and a loader:
    config_from_hf(hf_config) -> TokenEncoderConfig
    convert_state_dict(state_dict, config) -> state_dict   (rename table + fused QKV)
Every key is either mapped, or dropped by a named rule in ``DROPPED`` with the reason; any
other key is an error that names it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from ..hub import read_config, read_state_dict, register_importer, register_parity
from ..importing import KeyMap
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
        # RoBERTa (and XLM-R) number positions from padding_idx + 1
        position_offset=pad + 1 if model_type in ("roberta", "xlm-roberta") else 0,
    )


def _strip(key: str) -> str:
    key = re.sub(r"^(bert|roberta)\.", "", key)
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)  # TF-era names
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)


KEYS = KeyMap(RENAMES, DROPPED, qkv=_QKV, qkv_names=("query", "key", "value"), strip=_strip)
dropped_keys = KEYS.dropped_keys


def convert_state_dict(state_dict: dict[str, Tensor], config: TokenEncoderConfig) -> dict[str, Tensor]:
    """HF BERT/RoBERTa state dict -> TokenEncoder state dict. Raises on any unexplained key."""
    out = KEYS.convert(state_dict)
    if config.type_vocab_size == 0:
        out.pop("frontend.token_type_embeddings.weight", None)
    return out


@register_importer("bert", "roberta", "xlm-roberta")
def load_hf_bert(folder: Path) -> tuple[TokenEncoder, dict]:
    hf = read_config(folder)
    mosaic = is_mosaic(hf)  # MosaicBERT saves model_type "bert" too
    config = mosaic_config_from_hf(hf) if mosaic else config_from_hf(hf)  # config errors before reading weights
    raw = read_state_dict(folder)
    if not mosaic and any(_MOSAIC_QKV.search(k) for k in raw):
        raise ValueError(f"{folder} holds MosaicBERT weights (a fused Wqkv) but its config.json has no "
                         "alibi_starting_size; add MosaicBERT's config.json (bert_layers.py's) beside them")
    encoder = TokenEncoder(config)
    state = convert_mosaic_state_dict(raw, config) if mosaic else convert_state_dict(raw, config)
    encoder.load_state_dict(state, strict=True)
    meta = {
        "source": str(folder),
        "model_type": hf["model_type"],
        "name": hf.get("_name_or_path", ""),
        "dropped": (MOSAIC if mosaic else KEYS).dropped_keys(raw),
    }
    if mosaic:
        meta["layout"] = "mosaic-bert"
        meta["filled"] = {"backbone.layers.*.mlp.fc1.bias": "zeros: MosaicBERT's gated_layers has no bias"}
    return encoder, meta


# MosaicBERT (mosaicml/mosaic-bert-base, bert_layers.py): BERT's names for embeddings and the
# attention output, plus a fused Wqkv, a GLU feed-forward (gated_layers, no bias: act(first half) *
# second half; wo; layernorm) and ALiBi instead of position embeddings; post-LN throughout
_MOSAIC_QKV = re.compile(r"attention\.self\.Wqkv\.")
_ML = r"encoder\.layer\.(\d+)\."
MOSAIC = KeyMap(
    renames=[
        (r"embeddings\.word_embeddings\.weight", "frontend.word_embeddings.weight"),
        (r"embeddings\.token_type_embeddings\.weight", "frontend.token_type_embeddings.weight"),
        (r"embeddings\.LayerNorm\.(weight|bias)", "frontend.norm.{0}"),
        (_ML + r"attention\.self\.Wqkv\.(weight|bias)", "backbone.layers.{0}.attn.qkv.{1}"),  # rows [q; k; v]
        (_ML + r"attention\.output\.dense\.(weight|bias)", "backbone.layers.{0}.attn.out.{1}"),
        (_ML + r"attention\.output\.LayerNorm\.(weight|bias)", "backbone.layers.{0}.attn_norm.{1}"),
        (_ML + r"mlp\.gated_layers\.weight", "backbone.layers.{0}.mlp.fc1.weight"),
        (_ML + r"mlp\.wo\.(weight|bias)", "backbone.layers.{0}.mlp.fc2.{1}"),
        (_ML + r"mlp\.layernorm\.(weight|bias)", "backbone.layers.{0}.mlp_norm.{1}"),
    ],
    dropped={**DROPPED, r"^encoder\.alibi$": "ALiBi biases are computed from the slopes, not stored"},
    strip=_strip,
)


def is_mosaic(hf: dict) -> bool:
    """MosaicBERT's config.json: BERT's keys plus alibi_starting_size (and an auto_map to bert_layers)."""
    return "alibi_starting_size" in hf or "bert_layers" in json.dumps(hf.get("auto_map", {}))


def mosaic_config_from_hf(hf: dict) -> TokenEncoderConfig:
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"mosaic-bert checkpoint uses hidden_act={act!r}; its GLU imports with 'gelu' only")
    return TokenEncoderConfig(
        hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], activation="geglu", position="alibi",
        max_position_embeddings=hf.get("alibi_starting_size", hf.get("max_position_embeddings", 512)), norm="post",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.0), initializer_range=hf.get("initializer_range", 0.02),
        vocab_size=hf["vocab_size"], type_vocab_size=hf.get("type_vocab_size", 2), pad_token_id=hf.get("pad_token_id") or 0,
    )


def convert_mosaic_state_dict(state_dict: dict[str, Tensor], config: TokenEncoderConfig) -> dict[str, Tensor]:
    """MosaicBERT state dict -> TokenEncoder state dict; the GLU's missing input bias is zeros."""
    out = MOSAIC.convert(state_dict)
    for i in range(config.num_layers):
        out.setdefault(f"backbone.layers.{i}.mlp.fc1.bias", torch.zeros(2 * config.intermediate_size))
    return out


@register_parity("bert", "roberta", "xlm-roberta")
def bert_parity(folder: Path, encoder: TokenEncoder) -> float:
    """Every hidden state of a ragged batch (real tokens) against transformers' BertModel/RobertaModel."""
    import torch

    if getattr(encoder, "meta", {}).get("layout") == "mosaic-bert":
        raise ValueError("MosaicBERT has no implementation in transformers (its bert_layers.py is remote code, "
                         "never run here); tests/test_import.py checks it against its re-derived formulas")
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(0)
    lengths = [min(encoder.config.max_position_embeddings - 2, n) for n in (17, 5, 11)]
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    vocab = encoder.config.vocab_size
    ids = torch.randint(min(5, vocab - 1), vocab, mask.shape, generator=g).masked_fill(~mask, encoder.config.pad_token_id)
    ours = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    theirs = ref(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    return max(float((a - b)[mask].abs().max()) for a, b in zip(ours, theirs, strict=True))


def _fill_groups(pattern: str, values: tuple[str, ...]) -> str:
    """``encoder\\.layer\\.(\\d+)\\.x\\.(weight|bias)`` + ("3", "bias") -> ``encoder.layer.3.x.bias``."""
    it = iter(values)
    return re.sub(r"\([^)]*\)", lambda _: next(it), pattern).replace("\\.", ".")


_INVERSE_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


def to_hf(encoder: TokenEncoder) -> tuple[dict, dict[str, Tensor]]:
    """(HF config dict, HF state dict) of a BERT-shaped TokenEncoder: the inverse of the importer,
    so that ``transformers.AutoModel.from_pretrained`` rebuilds the same function. Refuses the
    options BertModel / RobertaModel cannot express (ALiBi/RoPE, pre-LN, GLU, bias-free layers)."""
    cfg = encoder.config
    problems = [f"{k}={getattr(cfg, k)!r}" for k, ok in (
        ("position", cfg.position == "absolute"), ("norm", cfg.norm == "post"),
        ("activation", cfg.activation in _INVERSE_ACTS), ("bias", cfg.bias), ("embedding_norm", cfg.embedding_norm),
    ) if not ok]
    roberta = cfg.position_offset > 0
    if roberta and cfg.position_offset != cfg.pad_token_id + 1:
        problems.append(f"position_offset={cfg.position_offset} (RoBERTa's is pad_token_id + 1)")
    if problems:
        raise ValueError(f"this encoder is not BERT-shaped ({', '.join(problems)}); transformers' BertModel "
                         "cannot hold it: export it as a Tessera folder instead")
    hf = {
        "model_type": "roberta" if roberta else "bert",
        "architectures": ["RobertaModel" if roberta else "BertModel"],
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "hidden_act": _INVERSE_ACTS[cfg.activation],
        "max_position_embeddings": cfg.max_position_embeddings,  # the table's rows (RoBERTa's offset included)
        "layer_norm_eps": cfg.layer_norm_eps, "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout, "initializer_range": cfg.initializer_range,
        "vocab_size": cfg.vocab_size, "type_vocab_size": max(cfg.type_vocab_size, 1), "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
    }
    state: dict[str, Tensor] = {}
    for name, value in encoder.state_dict().items():
        if m := re.fullmatch(r"backbone\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", name):
            layer, kind = m.groups()
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                state[f"encoder.layer.{layer}.attention.self.{part}.{kind}"] = chunk.clone()
            continue
        for pattern, target in RENAMES:  # the importer's table read backwards: fill the source pattern's groups
            target_re = re.escape(target).replace(r"\{0\}", "(.+?)").replace(r"\{1\}", "(.+?)")
            if mm := re.fullmatch(target_re, name):
                state[_fill_groups(pattern, mm.groups())] = value.clone()
                break
        else:
            raise KeyError(f"{name} has no place in a BertModel")
    if cfg.type_vocab_size == 0:  # BertModel always has token types: one row of zeros adds nothing
        state["embeddings.token_type_embeddings.weight"] = torch.zeros(1, cfg.hidden_size)
    return hf, state


"""Import HF MERT-v1 (``model_type`` "mert_model") and HuBERT ("hubert") folders into an AudioEncoder.

No remote code runs: the config is read as JSON and the weights by safetensors (or
``torch.load(weights_only=True)``). Two pure functions and a loader:
    config_from_hf(hf_config) -> AudioEncoderConfig
    convert_state_dict(state_dict, config) -> state_dict   (rename table + fused QKV + weight norm)
Every key is mapped, or dropped by a named rule in ``DROPPED`` with its reason; any other key
is an error naming it. MERT options that change the computation and are not implemented
(deepnorm, CQT input features, batch-norm positional conv) are refused with a message.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from ..exporting import register_exporter
from ..hub import read_config, read_state_dict, register_importer, register_parity
from ..importing import KeyMap
from .config import AudioEncoderConfig
from .model import AudioEncoder

DROPPED = {
    r"^(final_proj|label_embs_concat|project_q|quantizer)\b": "HuBERT/MERT pretraining heads (code "
    "prediction, quantizer): training targets, not the encoder",
    r"^(lm_head|projector|classifier|layer_weights)\b": "a fine-tuning head (CTC / classification), not the encoder",
    r"^feature_extractor_cqt\.": "CQT kernels of MERT's optional CQT input (refused by the config check)",
}

_L = r"encoder\.layers\.(\d+)\."
RENAMES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", "frontend.feature_extractor.conv_layers.{0}.conv.{1}"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", "frontend.feature_extractor.conv_layers.{0}.layer_norm.{1}"),
    (r"feature_projection\.(layer_norm|projection)\.(weight|bias)", "frontend.feature_projection.{0}.{1}"),
    (r"masked_spec_embed", "frontend.masked_spec_embed"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)", "frontend.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)", "frontend.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "frontend.pos_conv_embed.conv.bias"),
    (_L + r"attention\.out_proj\.(weight|bias)", "backbone.layers.{0}.attn.out.{1}"),
    (_L + r"layer_norm\.(weight|bias)", "backbone.layers.{0}.attn_norm.{1}"),
    (_L + r"feed_forward\.intermediate_dense\.(weight|bias)", "backbone.layers.{0}.mlp.fc1.{1}"),
    (_L + r"feed_forward\.output_dense\.(weight|bias)", "backbone.layers.{0}.mlp.fc2.{1}"),
    (_L + r"final_layer_norm\.(weight|bias)", "backbone.layers.{0}.mlp_norm.{1}"),
]
_QKV = re.compile(_L + r"attention\.(q|k|v)_proj\.(weight|bias)")
_ENCODER_NORM = re.compile(r"encoder\.layer_norm\.(weight|bias)")
_POS_PLAIN = "encoder.pos_conv_embed.conv.weight"  # a checkpoint saved with weight norm folded in

# MERT config options that would change the computation, and what to say about them
_REFUSED = {
    "deepnorm": "MERT's DeepNorm residual scaling is not implemented",
    "feature_extractor_cqt": "MERT's CQT input features (concatenated to the conv features) are not implemented",
    "conv_pos_batch_norm": "a batch-normalised positional conv is not implemented",
}


def config_from_hf(hf: dict) -> AudioEncoderConfig:
    model_type = hf.get("model_type", "?")
    for key, why in _REFUSED.items():
        if hf.get(key):
            raise ValueError(f"{model_type} checkpoint sets {key}={hf[key]!r}: {why}; it cannot be imported")
    for key in ("hidden_act", "feat_extract_activation"):
        if hf.get(key, "gelu") != "gelu":
            raise ValueError(f"{model_type} checkpoint uses {key}={hf[key]!r}; only 'gelu' imports")
    stable = bool(hf.get("do_stable_layer_norm", False))
    return AudioEncoderConfig(
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        norm="pre" if stable else "post",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        hidden_dropout=hf.get("hidden_dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        # MERT's config records its rate; HuBERT's does not (16 kHz)
        sample_rate=hf.get("sample_rate", 24000 if model_type == "mert_model" else 16000),
        conv_dim=list(hf["conv_dim"]),
        conv_kernel=list(hf["conv_kernel"]),
        conv_stride=list(hf["conv_stride"]),
        conv_bias=bool(hf.get("conv_bias", False)),
        feat_extract_norm=hf.get("feat_extract_norm", "group"),
        feat_proj_layer_norm=bool(hf.get("feat_proj_layer_norm", True)),
        feat_proj_dropout=hf.get("feat_proj_dropout", 0.0),
        num_conv_pos_embeddings=hf.get("num_conv_pos_embeddings", 128),
        num_conv_pos_embedding_groups=hf.get("num_conv_pos_embedding_groups", 16),
    )


KEYS = KeyMap(RENAMES, DROPPED, qkv=_QKV, qkv_names=("q", "k", "v"),
              strip=lambda k: re.sub(r"^(hubert|mert|model)\.", "", k))
dropped_keys = KEYS.dropped_keys


def convert_state_dict(state_dict: dict[str, Tensor], config: AudioEncoderConfig) -> dict[str, Tensor]:
    """HF Hubert/MERT state dict -> AudioEncoder state dict. Raises on any unexplained key."""

    def special(key: str, value: Tensor, out: dict) -> bool:
        if m := _ENCODER_NORM.fullmatch(key):
            # post-LN: the LayerNorm after the positional conv; pre-LN: the one closing the stack
            where = "frontend.layer_norm" if config.norm == "post" else "backbone.final_norm"
            out[f"{where}.{m.group(1)}"] = value
            return True
        if key == _POS_PLAIN:
            # weight norm over every axis but the kernel axis (dim=2): weight = g * v / ||v||
            prefix = "frontend.pos_conv_embed.conv.parametrizations.weight"
            out[f"{prefix}.original0"] = value.norm(dim=(0, 1), keepdim=True)
            out[f"{prefix}.original1"] = value
            return True
        return False

    return KEYS.convert(state_dict, special)


@register_importer("mert_model", "hubert")
def load_hf_mert(folder: Path) -> tuple[AudioEncoder, dict]:
    hf = read_config(folder)
    config = config_from_hf(hf)
    encoder = AudioEncoder(config)
    raw = read_state_dict(folder)
    converted = convert_state_dict(raw, config)
    if "frontend.masked_spec_embed" not in converted:  # HF omits it when masking was off in training
        converted["frontend.masked_spec_embed"] = encoder.frontend.masked_spec_embed.detach().clone()
    encoder.load_state_dict(converted, strict=True)
    meta = {
        "source": str(folder),
        "model_type": hf["model_type"],
        "name": hf.get("_name_or_path", ""),
        "sample_rate": config.sample_rate,
        "dropped": dropped_keys(raw),
    }
    if hf.get("attention_relax", -1) and hf.get("attention_relax", -1) > 0:
        # MERT rescales logits by 1/r, subtracts the row max, multiplies by r: softmax is unchanged
        meta["ignored"] = {"attention_relax": "a numerical-stability rewrite of the softmax; same result"}
    return encoder, meta


def hidden_state_differences(reference, encoder: AudioEncoder, wav: Tensor, lengths: list[int]) -> dict[str, float]:
    """Our ragged batch against ``reference`` (transformers' ``HubertModel``) run on each clip alone.

    ``wav`` (B, S) right-padded, ``lengths`` (B,) real samples. Returns the worst over clips of
    ``last_abs`` / ``last_rel`` (the last hidden state: max abs difference, ||ours - theirs|| / ||theirs||)
    and ``all_abs`` / ``all_rel`` (the same over every hidden state; in a pre-LN stack the states before
    the final norm grow to |x| ~ 10, where fp32 rounding alone reaches ~1e-5 in absolute terms)."""
    import torch

    mask = (torch.arange(wav.shape[1])[None] < torch.tensor(lengths)[:, None]).long()  # (B, S)
    out = {"last_abs": 0.0, "last_rel": 0.0, "all_abs": 0.0, "all_rel": 0.0}
    with torch.no_grad():
        ours = encoder(input_values=wav, attention_mask=mask, output_hidden_states=True).hidden_states
        for i, n in enumerate(lengths):
            h = reference(wav[i : i + 1, :n], output_hidden_states=True)
            theirs = (*h.hidden_states[:-1], h.last_hidden_state)  # transformers 5: the last state before the final norm
            T = h.last_hidden_state.shape[1]
            for j, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                d = a[i, :T] - b[0]  # (T, D)
                ab, rel = float(d.abs().max()), float(d.norm() / b[0].norm().clamp_min(1e-30))
                out["all_abs"], out["all_rel"] = max(out["all_abs"], ab), max(out["all_rel"], rel)
                if j == len(theirs) - 1:
                    out["last_abs"], out["last_rel"] = max(out["last_abs"], ab), max(out["last_rel"], rel)
    return out


def hubert_reference(folder: Path):
    """transformers' ``HubertModel`` from an HF Hubert / MERT folder (MERT-v1's layout is HuBERT's; its own
    modelling file is remote code, never run here)."""
    from transformers import HubertConfig, HubertModel

    hf = {k: v for k, v in read_config(folder).items() if k not in ("model_type", "architectures", "auto_map")}
    ref, info = HubertModel.from_pretrained(folder, config=HubertConfig(**hf), local_files_only=True,
                                            output_loading_info=True)
    missing = [k for k in info["missing_keys"] if k != "masked_spec_embed"]
    if missing:
        raise ValueError(f"transformers' HubertModel did not find {missing[:5]} in {folder}; no reference to compare with")
    return ref.eval()


@register_parity("mert_model", "hubert")
def mert_parity(folder: Path, encoder: AudioEncoder) -> float:
    """Max abs difference over every hidden state of a ragged batch of two clips (1 s, 0.75 s) against
    transformers' HubertModel run on each clip alone."""
    import torch

    rate = encoder.config.sample_rate
    lengths = [rate, (3 * rate) // 4]
    g = torch.Generator().manual_seed(0)
    wav = torch.zeros(2, lengths[0])
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n, generator=g)
    return hidden_state_differences(hubert_reference(folder), encoder, wav, lengths)["all_abs"]



# --- the reverse: an AudioEncoder -> an HF Hubert / MERT folder -----------------------------------
def _fill(pattern: str, groups: tuple[str, ...]) -> str:
    """``encoder\\.layers\\.(\\d+)\\.x\\.(weight|bias)`` + ("3", "bias") -> ``encoder.layers.3.x.bias``."""
    it = iter(groups)
    return re.sub(r"\((?!\?:)[^)]*\)", lambda _: next(it), re.sub(r"\(\?:([^|)]*)[^)]*\)", r"\1", pattern)).replace("\\.", ".")


def to_hf(encoder: AudioEncoder) -> tuple[dict, dict[str, Tensor]]:
    """(HF config dict, HF state dict) of a MERT-shaped AudioEncoder: the importer read backwards, so that
    transformers' ``HubertModel`` (MERT-v1's layout; ``model_type`` "hubert") rebuilds the same function.
    Refuses what HubertModel cannot express (RoPE/ALiBi, GLU or non-gelu activations, bias-free layers,
    local or causal attention)."""
    cfg = encoder.config
    problems = [f"{k}={getattr(cfg, k)!r}" for k, ok in (
        ("position", cfg.position == "none"), ("activation", cfg.activation == "gelu"), ("bias", cfg.bias),
        ("norm_bias", cfg.norm_bias), ("local_attention", not cfg.local_attention), ("causal", not cfg.causal),
        ("norm", cfg.norm in ("post", "pre")),
    ) if not ok]
    if problems:
        raise ValueError(f"this audio encoder is not MERT/HuBERT-shaped ({', '.join(problems)}); transformers' "
                         "HubertModel cannot hold it: export it as a Tessera folder instead")
    hf = {
        "model_type": "hubert", "architectures": ["HubertModel"],
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "hidden_act": "gelu", "feat_extract_activation": "gelu",
        "layer_norm_eps": cfg.layer_norm_eps, "hidden_dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout, "activation_dropout": 0.0, "feat_proj_dropout": cfg.feat_proj_dropout,
        "initializer_range": cfg.initializer_range, "conv_dim": list(cfg.conv_dim), "conv_kernel": list(cfg.conv_kernel),
        "conv_stride": list(cfg.conv_stride), "conv_bias": cfg.conv_bias, "feat_extract_norm": cfg.feat_extract_norm,
        "feat_proj_layer_norm": cfg.feat_proj_layer_norm, "num_conv_pos_embeddings": cfg.num_conv_pos_embeddings,
        "num_conv_pos_embedding_groups": cfg.num_conv_pos_embedding_groups,
        "do_stable_layer_norm": cfg.norm == "pre",
        "sample_rate": cfg.sample_rate,  # MERT-v1's config key; our importer reads it back (HuBERT's would be 16 kHz)
    }
    targets = [(re.escape(t).replace(r"\{0\}", "(.+?)").replace(r"\{1\}", "(.+?)"), p) for p, t in RENAMES]
    state: dict[str, Tensor] = {}
    for name, value in encoder.state_dict().items():
        if m := re.fullmatch(r"backbone\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", name):
            layer, kind = m.groups()
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                state[f"encoder.layers.{layer}.attention.{part}_proj.{kind}"] = chunk.clone()
        elif m := re.fullmatch(r"(?:frontend\.layer_norm|backbone\.final_norm)\.(weight|bias)", name):
            state[f"encoder.layer_norm.{m.group(1)}"] = value.clone()
        else:
            for target_re, pattern in targets:
                if mm := re.fullmatch(target_re, name):
                    state[_fill(pattern, mm.groups())] = value.clone()
                    break
            else:
                raise KeyError(f"{name} has no place in a HubertModel")
    return hf, state


def feature_extractor_config(sample_rate: int) -> dict:
    """transformers' ``Wav2Vec2FeatureExtractor`` settings MERT-v1 ships (preprocessor_config.json):
    mono float input, zero mean / unit variance per clip, as `tessera embed` feeds the encoder."""
    return {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": sample_rate,
            "padding_value": 0.0, "padding_side": "right", "do_normalize": True, "return_attention_mask": True}


@register_exporter("mert", help="a transformers HubertModel folder (MERT-v1's layout) + its feature-extractor config")
def write_mert_folder(encoder_folder: Path, out: Path, **options) -> Path:
    """An audio encoder folder (ours or an imported MERT/HuBERT) -> config.json + model.safetensors +
    preprocessor_config.json, which ``HubertModel.from_pretrained`` / ``AutoModel`` and
    ``AutoFeatureExtractor`` load (MARBLE-style code: processor(wav) -> model(...).hidden_states)."""
    import json

    from safetensors.torch import save_file

    from ..hub import load_encoder

    encoder = load_encoder(encoder_folder)
    if not isinstance(encoder, AudioEncoder):
        raise ValueError(f"{encoder_folder} holds a {type(encoder).__name__}; --format mert covers audio encoders "
                         "(MERT / HuBERT layout); use --format hf or sentence-transformers for token encoders")
    hf, state = to_hf(encoder)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(feature_extractor_config(hf["sample_rate"]), indent=2) + "\n")
    return out

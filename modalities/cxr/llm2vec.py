"""LLM2Vec: a transformers decoder (Llama, Qwen2, Mistral, ...) turned into a text encoder.

Three changes to the decoder, as in LLM2Vec (BehnamGhader et al., 2024) and LLM2VEC4CXR:
1. bidirectional attention: every attention module's ``is_causal`` is cleared and the model is
   given a prepared 4-D padding-only mask (``transformers.masking_utils.create_bidirectional_mask``),
   which every decoder's mask builder returns as-is;
2. a pooler (mean, weighted mean, EOS, latent attention) over the last hidden states;
3. LoRA adapters through peft on the *base* model (``LlamaModel``, not ``LlamaForCausalLM``), so
   adapter folders have LLM2Vec's own key layout (``base_model.model.layers.N...``).

A checkpoint is an HF decoder folder (config.json + safetensors) plus peft adapter folders,
applied in order (MNTP first, then SimCSE / supervised), each merged on request
(``load_llm2vec``), with upstream's release semantics (``llm2vec_release``: the MNTP adapter
beside the base config, ``llm2vec_config.json``, instruction tokens attended to but not pooled,
LLM2Vec4CXR's in-file latent-attention pooler); ``meta`` lists every adapter applied and every key
dropped. ``load_encoder`` on such a folder reads Tessera's ``llm2vec.json`` next to it for extra
adapters and options. Only eager and SDPA attention are supported (flash-attention kernels
ignore a 4-D mask).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..backbone import EncoderOutput
from ..backbone.pooling import create_pooler
from ..hub import register_architecture, register_importer, register_parity
from . import llm2vec_release as _release  # noqa: F401  (registers the "llm2vec" export format)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLM2Vec's
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DECODER_TYPES = ("llama", "qwen2", "mistral", "gemma")  # decoders whose folders load as LLM2Vec encoders
SIDECAR = "llm2vec.json"  # Tessera's, in an HF decoder folder: {"adapters", "base_model", "pooling", "merge", ...}
DTYPES = ("float32", "bfloat16", "float16")
POOLER_WEIGHTS = "pooler.safetensors"  # trainable pooler (latent attention) next to the adapters


@dataclass
class LLM2VecConfig:
    decoder: dict = field(default_factory=dict)  # the decoder's transformers config as a dict (model_type required)
    pooling: str = "mean"  # mean | weighted_mean | eos | cls | latent_attention
    bidirectional: bool = True  # False keeps the causal mask (the decoder as it was trained)
    attn_implementation: str = "sdpa"  # eager | sdpa (both honour the 4-D bidirectional mask)
    num_latents: int = 512  # latent array rows (latent_attention only; NV-Embed: 512)
    latent_heads: int = 8  # heads of the latent cross-attention
    lora_r: int = 0  # LoRA rank; 0: no adapters (LLM2Vec: 16)
    lora_alpha: int = 32  # LoRA scaling numerator (LLM2Vec: 32)
    lora_dropout: float = 0.05  # dropout on the LoRA input (LLM2Vec: 0.05)
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # module names that get LoRA
    dtype: str = "float32"  # float32 | bfloat16 | float16: the weights' dtype (releases ship bf16)
    skip_instruction: bool = True  # encode(..., embed_mask): pool the text's tokens only (LLM2Vec's default)

    def __post_init__(self) -> None:
        if "model_type" not in self.decoder:
            raise ValueError("LLM2VecConfig.decoder needs a 'model_type' (llama, qwen2, mistral, ...)")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} is not one of {ATTN_IMPLEMENTATIONS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LLM2VecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"LLM2VecConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def hf_config(self):
        from transformers import AutoConfig  # imported on use: `import modalities` stays light

        d = dict(self.decoder)
        cfg = AutoConfig.for_model(d.pop("model_type"), **d)
        cfg._attn_implementation = self.attn_implementation
        return cfg


def tiny_decoder(model_type: str = "llama", vocab_size: int = 128, hidden_size: int = 32, num_layers: int = 2,
                 num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 64,
                 max_position_embeddings: int = 512) -> dict:
    """A small decoder config dict (tests, demo): same fields for Llama, Qwen2 and Mistral."""
    return {
        "model_type": model_type, "vocab_size": vocab_size, "hidden_size": hidden_size,
        "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size, "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": False, "pad_token_id": 0,
    }


@register_architecture(LLM2VecConfig)
class LLM2VecEncoder(nn.Module):
    """decoder base model (bidirectional) + pooler; ``lm_logits`` for MNTP.

    ``forward(input_ids, attention_mask)`` -> ``EncoderOutput`` (zeros at pads);
    ``encode(input_ids, attention_mask)`` -> pooled (B, D).
    """

    architecture = "llm2vec"

    def __init__(self, config: LLM2VecConfig, decoder: nn.Module | None = None, init_from: str | None = None):
        """``init_from``: a saved LLM2Vec encoder folder (e.g. the MNTP stage's export, LoRA merged)
        whose decoder and LM head weights replace the fresh ones before new adapters are added;
        the pooler stays fresh."""
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.config = config
        hf_cfg = config.hf_config()
        causal_lm = decoder if decoder is not None else AutoModelForCausalLM.from_config(hf_cfg)
        self.model = causal_lm.base_model  # LlamaModel / Qwen2Model / MistralModel
        self.model.config._attn_implementation = config.attn_implementation
        self.tied = bool(getattr(hf_cfg, "tie_word_embeddings", False))
        # the LM head is kept for MNTP; tied heads reuse the input embedding (never a shared tensor on disk)
        self.lm_head = None if self.tied else causal_lm.get_output_embeddings()
        self.set_bidirectional(config.bidirectional)
        self.pooler = create_pooler(config.pooling, hf_cfg.hidden_size, num_latents=config.num_latents,
                                    num_heads=config.latent_heads)
        self.hidden_size = hf_cfg.hidden_size
        self.to(getattr(torch, config.dtype))
        if init_from is not None:
            self._load_weights_of(init_from)
        if config.lora_r:
            self._wrap_lora()

    # --- attention -----------------------------------------------------------------------
    def set_bidirectional(self, on: bool) -> None:
        self.config.bidirectional = on
        for m in self.model.modules():
            if hasattr(m, "is_causal"):
                m.is_causal = not on

    def base(self) -> nn.Module:
        """The decoder's base model (LoRA layers, if any, are injected in place)."""
        return self.model.get_base_model() if self.has_lora else self.model

    def _load_weights_of(self, folder: str) -> None:
        from ..hub import load_encoder

        other = load_encoder(folder)
        if not isinstance(other, LLM2VecEncoder):
            raise ValueError(f"{folder} holds a {type(other).__name__}, not an LLM2Vec encoder")
        if other.has_lora:
            other.merge_lora()
        self.model.load_state_dict(other.model.state_dict(), strict=True)
        if (self.lm_head is None) != (other.lm_head is None):
            raise ValueError(f"{folder}: tied / untied LM head differs from this config")
        if self.lm_head is not None:
            self.lm_head.load_state_dict(other.lm_head.state_dict(), strict=True)

    @property
    def output_dim(self) -> int:
        return self.hidden_size

    # --- LoRA ----------------------------------------------------------------------------
    @property
    def has_lora(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def _wrap_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        c = self.config
        present = {name.rsplit(".", 1)[-1] for name, _ in self.model.named_modules()}
        targets = [t for t in c.lora_targets if t in present]
        if not targets:
            raise ValueError(f"none of the LoRA targets {c.lora_targets} is a module of this "
                             f"{self.model.config.model_type} model")
        lora = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout, target_modules=targets)
        self.model = get_peft_model(self.model, lora)  # freezes the base weights

    def merge_lora(self) -> None:
        """Fold the adapters into the base weights (faster inference, same outputs)."""
        if not self.has_lora:
            raise ValueError("this encoder has no LoRA adapters to merge")
        self.model = self.model.merge_and_unload()
        self.config.lora_r = 0

    def save_adapter(self, folder: str | Path) -> Path:
        """Write the LoRA adapter in peft's layout (adapter_config.json + adapter_model.safetensors),
        and the pooler's weights when it has any."""
        if not self.has_lora:
            raise ValueError("this encoder has no LoRA adapters; save it with modalities.save_encoder")
        folder = Path(folder)
        self.model.save_pretrained(str(folder))
        pooler = {k: v.detach().contiguous() for k, v in self.pooler.state_dict().items()}
        if pooler:
            save_file(pooler, str(folder / POOLER_WEIGHTS))
        return folder

    # --- forward -------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                output_hidden_states: bool = False) -> EncoderOutput:
        inner = self.base()
        vocab = inner.config.vocab_size
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError("input_ids must be an integer tensor of shape (B, T)")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
            raise ValueError(f"input_ids hold ids outside the decoder's vocabulary [0, {vocab}); "
                             "check that the tokenizer matches the model")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        mask = attention_mask.bool()
        emb = inner.get_input_embeddings()(input_ids)  # (B, T, D)
        if self.config.bidirectional:
            from transformers.masking_utils import create_bidirectional_mask

            attn = create_bidirectional_mask(config=inner.config, inputs_embeds=emb, attention_mask=mask,
                                             allow_is_bidirectional_skip=False)  # (B, 1, T, T)
        else:
            attn = mask.long()
        out = inner(inputs_embeds=emb, attention_mask=attn, output_hidden_states=output_hidden_states,
                    use_cache=False)
        h = out.last_hidden_state * mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        return EncoderOutput(h, mask, out.hidden_states if output_hidden_states else None)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               embed_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, D). ``embed_mask`` (B, T): LLM2Vec's mask of the text after an
        instruction; every real token is attended to, only these are pooled (``skip_instruction``).
        Left or right padding pool alike (the poolers read the mask)."""
        out = self(input_ids, attention_mask)
        pool = out.mask
        if embed_mask is not None and self.config.skip_instruction and self.config.pooling != "bos":
            if embed_mask.shape != out.mask.shape:
                raise ValueError(f"embed_mask {tuple(embed_mask.shape)} must have attention_mask's shape {tuple(out.mask.shape)}")
            pool = out.mask & embed_mask.bool()  # bos pools the BOS token, which no embed_mask covers
        return self.pooler(out.last_hidden_state, pool)  # (B, D)

    def lm_logits(self, h: Tensor) -> Tensor:
        """(..., D) -> (..., V) through the decoder's LM head (tied or not)."""
        if self.lm_head is not None:
            return self.lm_head(h)
        return nn.functional.linear(h, self.base().get_input_embeddings().weight)


def _load_decoder(weights: Path, hf: dict, dtype: str, attn_implementation: str):
    """(causal LM with the folder's weights, LLM2Vec4CXR pooler state, meta additions); the decoder is
    built from config.json and loaded strictly here, so that no adapter beside the weights is
    applied behind the caller's back (transformers' from_pretrained would apply one)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .llm2vec_release import read_weights, split_checkpoint

    d = {k: v for k, v in hf.items() if k not in ("architectures", "auto_map", "transformers_version")}
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    cfg._attn_implementation = attn_implementation
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: initialise, then overwrite
        from contextlib import nullcontext as no_init_weights
    with no_init_weights():
        causal_lm = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    base, head, pooler, dropped = split_checkpoint(read_weights(weights))
    inner = causal_lm.base_model
    expected = set(inner.state_dict())
    missing, unexpected = sorted(expected - set(base)), sorted(set(base) - expected)
    if missing or unexpected:
        raise ValueError(f"{weights}: the weights do not match its {cfg.model_type} config.json: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    inner.load_state_dict(base, strict=True)
    meta: dict = {"dropped": dropped, "filled": {}}
    out_emb = causal_lm.get_output_embeddings()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    if head and not tied:
        out_emb.load_state_dict(head, strict=True)
    elif head:
        meta["dropped"]["lm_head.weight"] = "tie_word_embeddings: the LM head is the input embedding"
    elif not tied:
        torch.nn.init.normal_(out_emb.weight, std=getattr(cfg, "initializer_range", 0.02))
        meta["filled"]["lm_head.weight"] = ("random normal: the checkpoint is a bidirectional base model without an "
                                            "LM head; only MNTP training uses it, embeddings never do")
    return causal_lm, pooler, meta


def load_llm2vec(base: str | Path, adapters: list[str | Path] = (), merge: bool = True, pooling: str | None = None,
                 bidirectional: bool = True, attn_implementation: str = "sdpa", base_model: str | Path | None = None,
                 dtype: str = "float32", skip_instruction: bool | None = None,
                 latent_heads: int | None = None) -> LLM2VecEncoder:
    """An LLM2Vec release as upstream's ``LLM2Vec.from_pretrained(base, peft_model_name_or_path=...)``
    reads it, with every step reported in ``enc.meta``.

    ``base``: an HF decoder folder (config.json + weights), or an MNTP release folder (config.json +
    a peft adapter whose ``base_model_name_or_path`` names the weights: ``base_model``, a local
    folder or the local HF cache); that adapter is applied and merged first. ``adapters``: further
    peft folders in order (supervised / SimCSE); with ``merge`` every one is folded in, otherwise
    the last stays a trainable LoRA. ``pooling`` (upstream's ``pooling_mode`` names or Tessera's):
    default from ``llm2vec_config.json`` (the last adapter's folder, else ``base``), else
    latent_attention when the weights carry LLM2Vec4CXR's ``latent_attn.*``, else mean.
    ``dtype``: float32, bfloat16 or float16 (adapters merge in it). An adapter that does not fit
    the base model is refused, naming the modules and the base it was trained on."""
    from peft import PeftModel

    from ..hub import read_config
    from .llm2vec_release import (
        ADAPTER_CONFIG,
        LATENT_HEADS,
        adapter_summary,
        check_adapter_fits,
        has_weights,
        pooling_name,
        read_upstream_config,
        resolve_base,
    )

    base = Path(base)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base} has no config.json; give an HF decoder folder ({', '.join(DECODER_TYPES)}) "
                                "or an LLM2Vec release folder")
    hf = read_config(base)
    if hf.get("model_type") not in DECODER_TYPES:
        raise ValueError(f"{base}: model_type {hf.get('model_type')!r} is not a decoder LLM2Vec supports "
                         f"({', '.join(DECODER_TYPES)})")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
    embedded = base / ADAPTER_CONFIG
    if base_model is not None:
        weights = Path(base_model)
        if not has_weights(weights):
            raise FileNotFoundError(f"base_model {weights} holds no decoder weights (model.safetensors, shards or "
                                    "pytorch_model.bin)")
    elif has_weights(base):
        weights = base
    elif embedded.is_file():
        weights = resolve_base(base, adapter_summary(base)["base_model_name_or_path"])
    else:
        raise FileNotFoundError(f"{base} holds neither decoder weights nor an {ADAPTER_CONFIG}; give the decoder "
                                "folder, or base_model")
    causal_lm, pooler_state, meta = _load_decoder(weights, hf, dtype, attn_implementation)
    steps = ([base] if embedded.is_file() else []) + [Path(a) for a in adapters]
    upstream = read_upstream_config(steps[-1] if adapters else base) or {}
    where = str((steps[-1] if adapters else base) / "llm2vec_config.json")
    if pooling is None:
        pooling = upstream.get("pooling_mode") or ("latent_attention" if pooler_state else "mean")
    pooling = pooling_name(pooling, where)
    config = LLM2VecConfig(
        decoder=causal_lm.config.to_dict(), pooling=pooling, bidirectional=bidirectional,
        attn_implementation=attn_implementation, dtype=dtype,
        skip_instruction=upstream.get("skip_instruction", True) if skip_instruction is None else skip_instruction,
        num_latents=pooler_state["latents"].shape[0] if pooler_state else 512,
        latent_heads=latent_heads or LATENT_HEADS,
    )
    enc = LLM2VecEncoder(config, decoder=causal_lm)
    if pooler_state and pooling == "latent_attention":
        enc.pooler.load_state_dict({k: v.to(enc.pooler.latents.dtype) for k, v in pooler_state.items()}, strict=True)
        meta["pooler"] = f"latent_attention from {weights} (latent_attn.*: {pooler_state['latents'].shape[0]} latents, " \
                         f"{config.latent_heads} heads)"
    elif pooler_state:
        meta["dropped"]["latent_attn.*"] = f"LLM2Vec4CXR's latent-attention pooler, unused: pooling is {pooling!r}"
    applied = []
    for i, folder in enumerate(steps):
        if not (folder / ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(f"{folder} has no {ADAPTER_CONFIG}; give a peft adapter folder")
        check_adapter_fits(folder, enc.model, f"{weights} + {len(applied)} adapter(s) before it")
        last = i == len(steps) - 1
        keep = last and not merge and folder != base
        enc.model = PeftModel.from_pretrained(enc.model, str(folder), is_trainable=keep)
        if keep:
            enc.config.lora_r = enc.model.peft_config["default"].r
        else:
            enc.model = enc.model.merge_and_unload()
        applied.append({**adapter_summary(folder), "merged": not keep,
                        "role": "the release's own adapter (beside its config.json: MNTP)" if folder == base
                        else "given adapter"})
        if (folder / POOLER_WEIGHTS).is_file():
            enc.pooler.load_state_dict(load_file(str(folder / POOLER_WEIGHTS)), strict=True)
            meta["pooler"] = f"{pooling} from {folder / POOLER_WEIGHTS}"
    enc.set_bidirectional(bidirectional)
    enc.meta = {"source": str(base), "name_or_path": hf.get("_name_or_path", ""),  # llm2vec_inputs' chat turn
                "base_weights": str(weights), "adapters": applied, "pooling": pooling,
                "dtype": dtype, "bidirectional": bidirectional, "llm2vec_config": upstream and {"file": where, **upstream},
                "padding_side": "any (the poolers read the mask; upstream pads left)", **meta}
    return enc


@register_importer(*DECODER_TYPES)
def import_llm2vec(folder: Path) -> tuple[LLM2VecEncoder, dict]:
    """``load_encoder`` importer for decoder folders and LLM2Vec release folders; Tessera's
    ``llm2vec.json`` beside config.json may name further ``adapters`` (paths relative to the
    folder), ``base_model``, ``pooling``, ``merge``, ``bidirectional``, ``attn_implementation``,
    ``dtype``, ``skip_instruction``."""
    sidecar = folder / SIDECAR
    try:
        opts = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{sidecar} is not valid JSON: {e}") from None
    known = {"adapters", "base_model", "merge", "pooling", "bidirectional", "attn_implementation", "dtype",
             "skip_instruction", "latent_heads"}
    if set(opts) - known:
        raise ValueError(f"{sidecar}: unknown keys {sorted(set(opts) - known)}; known: {sorted(known)}")
    adapters = [Path(os.path.normpath(folder / a)) for a in opts.pop("adapters", [])]
    if opts.get("base_model") is not None:
        opts["base_model"] = Path(os.path.normpath(folder / opts["base_model"]))
    enc = load_llm2vec(folder, adapters, **opts)
    return enc, enc.meta


@register_parity(*DECODER_TYPES)
def llm2vec_parity(folder: Path, encoder: LLM2VecEncoder) -> float:
    """``tessera import --check``: the llm2vec package's computation re-derived on transformers' own
    decoder (from ``meta.base_weights``), every adapter of ``meta.adapters`` merged by LoRA's formula
    (W + alpha / r * B A), ``is_causal`` cleared with LlamaBiModel's padding-only mask, and
    ``LLM2Vec.get_pooling`` on a left-padded batch; max |difference| over the real tokens' last
    hidden states and the pooled vectors (fp32)."""
    from transformers import AutoConfig, AutoModel

    from .llm2vec_release import read_adapter_weights, read_weights, split_checkpoint

    meta = getattr(encoder, "meta", {})
    if "base_weights" not in meta:
        raise ValueError(f"{folder}: the encoder's meta has no base_weights (imported before adapters were reported); "
                         "import it again")
    hf = json.loads((Path(folder) / "config.json").read_text())
    d = {k: v for k, v in hf.items() if k not in ("architectures", "auto_map", "transformers_version")}
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    cfg._attn_implementation = "eager"
    ref = AutoModel.from_config(cfg, dtype=torch.float32).eval()
    base, _, latent, _ = split_checkpoint(read_weights(Path(meta["base_weights"])))
    ref.load_state_dict({k: v.float() for k, v in base.items()}, strict=True)
    with torch.no_grad():
        for a in meta.get("adapters", []):
            acfg = json.loads((Path(a["path"]) / "adapter_config.json").read_text())
            ab = read_adapter_weights(Path(a["path"]))
            for key, A in ab.items():
                if ".lora_A." in key:
                    name = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                    B = ab[key.replace(".lora_A.", ".lora_B.")]
                    ref.get_submodule(name).weight += acfg["lora_alpha"] / acfg["r"] * (B.float() @ A.float())
    for m in ref.modules():
        if hasattr(m, "is_causal"):
            m.is_causal = False
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([11, 4, 7])
    T, vocab = int(lengths.max()), cfg.vocab_size
    attn = (torch.arange(T)[None] >= (T - lengths)[:, None]).long()  # left padding, as LLM2Vec pads
    ids = torch.randint(min(5, vocab - 1), vocab, (3, T), generator=g).masked_fill(attn == 0, 0)
    pad = attn[:, None, None, :].eq(0).expand(-1, 1, T, -1)
    h = ref(input_ids=ids, attention_mask=torch.zeros(pad.shape).masked_fill(pad, torch.finfo(torch.float32).min))
    h = h.last_hidden_state
    pooling = encoder.config.pooling
    rows = [h[i, -int(n):] for i, n in enumerate(lengths)]  # each row's real tokens
    if pooling == "mean":
        want = torch.stack([r.mean(0) for r in rows])
    elif pooling == "weighted_mean":
        want = torch.stack([(r * (w := torch.arange(1, len(r) + 1.0))[:, None]).sum(0) / w.sum() for r in rows])
    elif pooling == "eos":
        want = h[:, -1]
    elif pooling in ("bos", "cls"):
        want = torch.stack([r[0] for r in rows])
    elif pooling == "latent_attention" and latent:  # LLM2Vec4CXR's LatentAttentionPooling, one sample at a time
        D = cfg.hidden_size
        mha = nn.MultiheadAttention(D, encoder.config.latent_heads, batch_first=True)
        mha.load_state_dict({k[len("attn."):]: v.float() for k, v in latent.items() if k.startswith("attn.")})
        mlp = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))
        mlp.load_state_dict({k[len("mlp."):]: v.float() for k, v in latent.items() if k.startswith("mlp.")})
        lat = latent["latents"].float()[None]
        want = torch.stack([mlp(mha(r[None], lat, lat, need_weights=False)[0]).mean(1)[0] for r in rows])
    else:
        raise ValueError(f"{folder}: no reference formula for pooling {pooling!r} without its weights in the checkpoint")
    enc = encoder.float()
    out = enc(ids, attn)
    got = enc.encode(ids, attn)
    real = attn.bool()
    return max(float((out.last_hidden_state - h)[real].abs().max()), float((got - want).abs().max()))

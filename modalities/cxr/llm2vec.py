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
(``load_llm2vec``); ``load_encoder`` on such a folder reads ``llm2vec.json`` next to it for the
adapters and pooling. Only eager and SDPA attention are supported (flash-attention kernels
ignore a 4-D mask).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..backbone import EncoderOutput
from ..backbone.pooling import create_pooler
from ..hub import register_architecture, register_importer

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLM2Vec's
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DECODER_TYPES = ("llama", "qwen2", "mistral")  # decoders whose folders load as LLM2Vec encoders
SIDECAR = "llm2vec.json"  # in an HF decoder folder: {"pooling", "adapters": [...], "merge", "bidirectional"}
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

    def __post_init__(self) -> None:
        if "model_type" not in self.decoder:
            raise ValueError("LLM2VecConfig.decoder needs a 'model_type' (llama, qwen2, mistral, ...)")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} is not one of {ATTN_IMPLEMENTATIONS}")
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

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self(input_ids, attention_mask)
        return self.pooler(out.last_hidden_state, out.mask)  # (B, D)

    def lm_logits(self, h: Tensor) -> Tensor:
        """(..., D) -> (..., V) through the decoder's LM head (tied or not)."""
        if self.lm_head is not None:
            return self.lm_head(h)
        return nn.functional.linear(h, self.base().get_input_embeddings().weight)


def load_llm2vec(base: str | Path, adapters: list[str | Path] = (), merge: bool = True, pooling: str = "mean",
                 bidirectional: bool = True, attn_implementation: str = "sdpa") -> LLM2VecEncoder:
    """An HF decoder folder + peft adapter folders applied in order (LLM2Vec's MNTP then SimCSE /
    supervised). ``merge``: fold every adapter into the weights; otherwise all but the last are
    merged (as LLM2Vec does) and the last stays a trainable LoRA. Weights load strictly: a missing
    or unexpected key is an error naming it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = Path(base)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base} has no config.json; give an HF decoder folder (Llama, Qwen2, Mistral)")
    decoder, info = AutoModelForCausalLM.from_pretrained(
        str(base), attn_implementation=attn_implementation, output_loading_info=True, dtype=torch.float32,
    )
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise ValueError(f"{base}: the weights do not match the config: {bad}")
    config = LLM2VecConfig(decoder=decoder.config.to_dict(), pooling=pooling, bidirectional=bidirectional,
                           attn_implementation=attn_implementation)
    enc = LLM2VecEncoder(config, decoder=decoder)
    for i, folder in enumerate(adapters):
        folder = Path(folder)
        if not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{folder} has no adapter_config.json; give a peft adapter folder")
        enc.model = PeftModel.from_pretrained(enc.model, str(folder), is_trainable=not merge)
        if merge or i < len(adapters) - 1:
            enc.model = enc.model.merge_and_unload()
        else:
            enc.config.lora_r = enc.model.peft_config["default"].r
        if (folder / POOLER_WEIGHTS).is_file():
            enc.pooler.load_state_dict(load_file(str(folder / POOLER_WEIGHTS)), strict=True)
    enc.set_bidirectional(bidirectional)
    return enc


@register_importer(*DECODER_TYPES)
def import_llm2vec(folder: Path) -> tuple[LLM2VecEncoder, dict]:
    """``load_encoder`` importer for decoder folders; ``llm2vec.json`` beside config.json may name
    adapters (paths relative to the folder), pooling, merge and bidirectional."""
    sidecar = folder / SIDECAR
    opts = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    known = {"adapters", "merge", "pooling", "bidirectional", "attn_implementation"}
    if set(opts) - known:
        raise ValueError(f"{sidecar}: unknown keys {sorted(set(opts) - known)}; known: {sorted(known)}")
    adapters = [folder / a for a in opts.pop("adapters", [])]
    enc = load_llm2vec(folder, adapters, **opts)
    meta = {"source": str(folder), "adapters": [str(a) for a in adapters], "pooling": enc.config.pooling}
    return enc, meta

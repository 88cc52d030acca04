"""The one config dataclass of the shared backbone, and the token encoder's extension of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "geglu", "swiglu")
POSITIONS = ("absolute", "alibi", "rope", "none")
NORMS = ("post", "pre")


@dataclass
class BackboneConfig:
    hidden_size: int = 768  # model width D
    num_layers: int = 12  # transformer blocks
    num_heads: int = 12  # attention heads; hidden_size must divide by it
    intermediate_size: int = 3072  # FFN width (per branch for geglu/swiglu)
    activation: str = "gelu"  # gelu (erf, as BERT) | gelu_tanh | relu | geglu | swiglu
    position: str = "absolute"  # absolute (learned, added by the frontend) | alibi | rope | none
    max_position_embeddings: int = 512  # size of the learned position table (absolute only)
    rope_theta: float = 10000.0  # RoPE base frequency (rope only)
    norm: str = "post"  # post-LN as in BERT, or pre-LN (adds a final LayerNorm)
    layer_norm_eps: float = 1e-12  # BERT's value; 1e-5 for most pre-LN models
    hidden_dropout: float = 0.1  # after attention output and FFN output
    attention_dropout: float = 0.1  # on attention probabilities
    attention_backend: str = "sdpa"  # eager | sdpa | unpadded (padding removed at the boundary)
    bias: bool = True  # biases in the linear layers (BERT: yes; MosaicBERT/ModernBERT: no)
    initializer_range: float = 0.02  # std of the normal init of linear and embedding weights
    norm_bias: bool = True  # biases in the LayerNorms (ModernBERT: no)
    first_layer_attn_norm: bool = True  # pre-LN: normalise layer 0's input (ModernBERT: no, its embeddings are)
    local_attention: int = 0  # total window of the local layers: a token sees keys within local_attention // 2
    #   positions either side (ModernBERT: 128); 0 = every layer global
    global_attn_every_n_layers: int = 1  # layers 0, n, 2n, ... attend globally, the others locally (ModernBERT: 3)
    local_rope_theta: float | None = None  # RoPE base of the local layers (ModernBERT: 10000); None: rope_theta
    causal: bool = False  # a token sees itself and earlier tokens only (SASRec, decoder-style LLM2Vec bases)

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"{type(self).__name__}: {msg}")

        if self.hidden_size % self.num_heads:
            raise bad(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise bad(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.position not in POSITIONS:
            raise bad(f"position {self.position!r} is not one of {POSITIONS}")
        if self.norm not in NORMS:
            raise bad(f"norm {self.norm!r} is not one of {NORMS}")
        if self.position == "rope" and self.head_dim % 2:
            raise bad(f"rope needs an even head dim, got {self.head_dim}")
        if self.local_attention < 0 or self.local_attention % 2:
            raise bad(f"local_attention must be an even window >= 0, got {self.local_attention}")
        for name in ("num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
                     "global_attn_every_n_layers"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be >= 1, got {getattr(self, name)}")
        # the backend name is checked against the registry when the backbone is built

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def is_local(self, layer: int) -> bool:
        """Whether layer ``layer`` attends within the local window only."""
        return self.local_attention > 0 and layer % self.global_attn_every_n_layers != 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class TokenEncoderConfig(BackboneConfig):
    """Backbone + the generic token/ID frontend (BERT text, code tokens, item IDs)."""

    vocab_size: int = 30522  # rows of the token embedding (BERT's WordPiece vocabulary)
    type_vocab_size: int = 2  # token-type (segment) embeddings; 0 disables them
    pad_token_id: int = 0  # id used for padding; its embedding row is not special-cased
    position_offset: int = 0  # first position id (RoBERTa: padding_idx + 1 = 2)
    embedding_norm: bool = True  # LayerNorm on the summed embeddings (BERT: yes)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 1:
            raise ValueError(f"TokenEncoderConfig: vocab_size must be >= 1, got {self.vocab_size}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"TokenEncoderConfig: pad_token_id {self.pad_token_id} is outside the vocabulary "
                f"[0, {self.vocab_size})"
            )

    @property
    def max_length(self) -> int | None:
        """Longest sequence the position table allows (None: no table, any length)."""
        if self.position != "absolute":
            return None
        return self.max_position_embeddings - self.position_offset

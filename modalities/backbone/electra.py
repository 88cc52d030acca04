"""ELECTRA (Clark et al., ICLR 2020): a small masked-LM generator proposes replacements, and the
discriminator, an ordinary ``TokenEncoder``, labels every token original or replaced.

Layout follows Google's ``electra/model/modeling.py`` / ``run_pretraining.py`` and HF's
``ElectraForPreTraining`` / ``ElectraForMaskedLM`` (read through the stored GitHub index):

- the generator is the discriminator's shape at a fraction of its width (hidden size, heads and
  FFN width times ``fraction``; the paper's best is 1/4 to 1/2, the released small model 1/4), with
  the same number of layers unless told otherwise;
- both networks read the SAME token frontend (word, position and token-type embeddings and their
  LayerNorm: one module registered in both), and the generator projects the embedding width down
  to its own (``ElectraGenerator.project``, ELECTRA's ``embeddings_project``);
- the generator's MLM head is dense (its width -> the embedding width) + activation + LayerNorm,
  then a decoder tied to the shared embedding table;
- replacements are sampled from the generator's softmax (Gumbel-max, temperature 1), with no
  gradient through the sample; a sampled token equal to the original is labelled *original*;
- the discriminator head is dense + activation + dense(1) on every real token; the loss is
  ``mlm + rtd_weight * rtd`` with ``rtd_weight = 50``.

Only the discriminator is kept after pretraining (``ElectraModel.discriminator``: a TokenEncoder,
saved with ``modalities.save_encoder`` like any other encoder).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone
from .config import BackboneConfig
from .encoder import TokenEncoder, init_weights
from .linear import Linear, linear
from .mlp import activation_fn


def generator_config(config: BackboneConfig, fraction: float = 0.25, num_layers: int | None = None) -> BackboneConfig:
    """The generator's backbone config: ``config`` at ``fraction`` of its width (hidden size, heads,
    FFN width), ``num_layers`` layers (default: as many as the discriminator)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"generator fraction must be in (0, 1], got {fraction}")
    heads = max(1, round(config.num_heads * fraction))
    hidden = max(heads, round(config.hidden_size * fraction / heads) * heads)  # divisible by heads
    return replace(config, hidden_size=hidden, num_heads=heads,
                   intermediate_size=max(1, round(config.intermediate_size * fraction)),
                   num_layers=num_layers or config.num_layers)


class GeneratorHead(nn.Module):
    """Generator width -> dense to the embedding width + activation + LayerNorm -> tied decoder."""

    def __init__(self, hidden_size: int, embedding: nn.Embedding, activation: str = "gelu", eps: float = 1e-12):
        super().__init__()
        self.dense = Linear(hidden_size, embedding.embedding_dim)
        self.act = activation_fn("gelu" if activation in ("geglu", "swiglu") else activation)
        self.norm = nn.LayerNorm(embedding.embedding_dim, eps=eps)
        self.embedding = embedding  # tied: the decoder weight is the shared input embedding table
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, h: Tensor) -> Tensor:
        # h: (M, d) -> logits (M, V)
        return linear(self.norm(self.act(self.dense(h))), self.embedding.weight, self.bias)


class DiscriminatorHead(nn.Module):
    """ELECTRA's replaced-token head: dense + activation + dense to one logit per token.

    ``prior``: the share of replaced tokens the head starts at (its output bias is the prior's
    logit; None: bias 0, probability 1/2). Starting at 1/2 against a 15 % base rate, AdamW moves
    every parameter at about the learning rate per step, so the whole encoder (embedding table,
    norms, layers), not the one bias, writes the base-rate constant into every token state: the
    states collapse to one direction within ~50 steps and the context that tells a replaced token
    apart is gone (measured on code; docs/electra.md). The RetinaNet-style prior init removes
    that first, largest, content-free gradient."""

    def __init__(self, hidden_size: int, activation: str = "gelu", prior: float | None = None):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size)
        self.act = activation_fn("gelu" if activation in ("geglu", "swiglu") else activation)
        self.out = Linear(hidden_size, 1)
        if prior is not None and not 0.0 < prior < 1.0:
            raise ValueError(f"the replaced-token prior must be in (0, 1), got {prior}")
        self.prior = prior

    def reset_bias(self) -> None:
        """The output bias at the prior's logit (0 without a prior)."""
        with torch.no_grad():
            p = self.prior
            self.out.bias.fill_(0.0 if p is None else float(torch.logit(torch.tensor(p, dtype=torch.float64))))

    def forward(self, h: Tensor) -> Tensor:
        # h: (..., D) -> logits (...): > 0 means "replaced"
        return self.out(self.act(self.dense(h))).squeeze(-1)


class ElectraGenerator(nn.Module):
    """Shared frontend -> projection to the generator width -> a narrow backbone -> MLM head."""

    def __init__(self, frontend: nn.Module, config: BackboneConfig, embedding_size: int):
        super().__init__()
        self.frontend = frontend  # the discriminator's own module: one set of embedding parameters
        self.project = Linear(embedding_size, config.hidden_size) if config.hidden_size != embedding_size else nn.Identity()
        self.backbone = Backbone(config)
        self.head = GeneratorHead(config.hidden_size, frontend.word_embeddings, config.activation, config.layer_norm_eps)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        x, mask = self.frontend(input_ids, attention_mask, token_type_ids)  # (B, T, D)
        return self.backbone(self.project(x), mask).last_hidden_state  # (B, T, d)


def sample_tokens(logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """One id per row of ``logits`` (M, V) from softmax(logits / temperature), by Gumbel-max; no gradient."""
    with torch.no_grad():
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-9))).clamp_min(1e-9))  # (M, V)
        return (logits.detach().float() / temperature + gumbel).argmax(-1)  # (M,)


def corrupt(original: Tensor, masked: Tensor, sampled: Tensor) -> tuple[Tensor, Tensor]:
    """(discriminator input, replaced labels): ``sampled`` (M,) written at ``masked`` (B, T) of
    ``original``; a position counts as replaced only where the sample differs from the original."""
    corrupted = original.clone()
    corrupted[masked] = sampled.to(original.dtype)
    return corrupted, corrupted != original  # (B, T), (B, T) bool


class ElectraModel(nn.Module):
    """Generator + discriminator around one shared token frontend.

    Args:
        discriminator: the encoder being pretrained (kept afterwards); its frontend is shared.
        generator_fraction: the generator's width as a fraction of the discriminator's.
        generator_layers: the generator's depth (None: the discriminator's).
        rtd_weight: lambda, the weight of the replaced-token loss (the paper: 50).
        temperature: of the generator's softmax when sampling replacements.
        rtd_prior: the replaced share the discriminator head starts at (``DiscriminatorHead``): the
            mask ratio, as a fresh generator's samples almost never equal the original; None: 1/2.
    """

    def __init__(self, discriminator: TokenEncoder, generator_fraction: float = 0.25, generator_layers: int | None = None,
                 rtd_weight: float = 50.0, temperature: float = 1.0, rtd_prior: float | None = 0.15):
        super().__init__()
        cfg = discriminator.config
        self.discriminator = discriminator
        self.generator_config = generator_config(cfg, generator_fraction, generator_layers)
        self.generator = ElectraGenerator(discriminator.frontend, self.generator_config, cfg.hidden_size)
        self.rtd_head = DiscriminatorHead(cfg.hidden_size, cfg.activation, rtd_prior)
        self.rtd_weight, self.temperature = rtd_weight, temperature
        # the new parts get BERT's init; the shared frontend (and the generator head's tied decoder,
        # which is the frontend's embedding table) keeps the discriminator's weights
        head = self.generator.head
        for m in (self.generator.project, self.generator.backbone, head.dense, head.norm, self.rtd_head):
            init_weights(m, cfg.initializer_range)
        nn.init.zeros_(head.bias)
        self.rtd_head.reset_bias()

    def replaced_logits(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """The discriminator's per-token "replaced" logit (B, T) for a (possibly corrupted) sequence."""
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.discriminator(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        return self.rtd_head(hidden).float()  # (B, T)

    def forward(self, generator_input: Tensor, original: Tensor, masked: Tensor, attention_mask: Tensor,
                token_type_ids: Tensor | None = None, generator: torch.Generator | None = None) -> dict:
        """generator_input (B, T): ``original`` with [MASK] at ``masked`` (B, T) bool. Returns named losses."""
        attention_mask = attention_mask.bool()
        hidden = self.generator(generator_input, attention_mask, token_type_ids)  # (B, T, d)
        logits = self.generator.head(hidden[masked]).float()  # (M, V): masked positions only
        targets = original[masked]  # (M,)
        mlm = F.cross_entropy(logits, targets)
        sampled = sample_tokens(logits, self.temperature, generator)  # (M,), no gradient
        corrupted, replaced = corrupt(original, masked, sampled)
        rtd_logits = self.replaced_logits(corrupted, attention_mask, token_type_ids)  # (B, T)
        real = rtd_logits[attention_mask]  # (N,) every real token carries the loss
        labels = replaced[attention_mask].float()
        rtd = F.binary_cross_entropy_with_logits(real, labels)
        return {"loss": mlm + self.rtd_weight * rtd, "mlm_loss": mlm, "rtd_loss": rtd,
                "generator_accuracy": (sampled == targets).float().mean(),
                "rtd_accuracy": ((real > 0) == labels.bool()).float().mean(),
                "replaced_share": labels.mean(), "masked": int(targets.numel()), "tokens": int(labels.numel()),
                "rtd_logits": rtd_logits, "replaced": replaced}

    def training_flops(self, lengths: Tensor, masked: int) -> float:
        """Analytic FLOPs of one training step (forward + backward = 3 x forward) on sequences of
        ``lengths`` with ``masked`` generator predictions: generator (projection, backbone, head on
        the masked positions), discriminator and its per-token head."""
        cfg, g = self.discriminator.config, self.generator_config
        n = float(lengths.sum())
        fwd = backbone_flops(cfg, lengths) + backbone_flops(g, lengths)
        fwd += n * 2 * cfg.hidden_size * g.hidden_size if g.hidden_size != cfg.hidden_size else 0.0  # project
        fwd += masked * (2 * g.hidden_size * cfg.hidden_size + 2 * cfg.hidden_size * cfg.vocab_size)  # generator head
        fwd += n * (2 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size)  # discriminator head
        return 3.0 * fwd


def backbone_flops(cfg: BackboneConfig, lengths: Tensor) -> float:
    """Forward FLOPs (2 per multiply-add) of ``cfg``'s layers on unpadded sequences of ``lengths``:
    Q, K, V and output projections, the FFN (three matrices when gated), and attention's scores and
    weighted sum over each sequence's own tokens (a local window caps the keys)."""
    D, inner = cfg.hidden_size, cfg.intermediate_size
    n = float(lengths.sum())
    matrices = 3 if cfg.activation in ("geglu", "swiglu") else 2
    per_token = 2 * 4 * D * D + 2 * matrices * D * inner
    total = 0.0
    for layer in range(cfg.num_layers):
        keys = lengths.double()
        if cfg.is_local(layer):
            keys = keys.clamp(max=cfg.local_attention + 1)
        total += n * per_token + float((lengths.double() * keys).sum()) * 4 * D
    return total


def mlm_training_flops(cfg, lengths: Tensor, masked: int) -> float:
    """Analytic FLOPs of one masked-LM training step (``tasks.text.MaskedLMSystem``: encoder, and the
    head of dense + tied decoder on the masked positions only), 3 x forward."""
    D = cfg.hidden_size
    return 3.0 * (backbone_flops(cfg, lengths) + masked * (2 * D * D + 2 * D * cfg.vocab_size))

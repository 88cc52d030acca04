"""The generic token/ID frontend shared by BERT text, code tokens and item IDs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import TokenEncoderConfig
from .dropout import FastDropout
from .padding import token_positions


class TokenFrontend(nn.Module):
    """ids (B, T) -> embeddings (B, T, D), mask (B, T).

    word + learned position (only when ``position == "absolute"``) + token type, then
    LayerNorm and dropout. Parameter names follow HF BERT's embeddings.
    """

    def __init__(self, config: TokenEncoderConfig):
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, D)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, D) if config.position == "absolute" else None
        )
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, D) if config.type_vocab_size > 0 else None
        )
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps, bias=config.norm_bias) if config.embedding_norm else nn.Identity()
        self.dropout = FastDropout(config.hidden_dropout)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        cfg = self.config
        input_ids = _check_ids(input_ids, "input_ids", cfg.vocab_size)
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {(B, T)}"
            )
        x = self.word_embeddings(input_ids)  # (B, T, D)
        if self.position_embeddings is not None:
            if T > cfg.max_length:
                raise ValueError(
                    f"input_ids have length {T} but the position table allows {cfg.max_length} "
                    f"tokens (max_position_embeddings={cfg.max_position_embeddings}); truncate the "
                    "input or use a model with position 'alibi' or 'rope'"
                )
            positions = token_positions(attention_mask) + cfg.position_offset  # (B, T)
            x = x + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            else:
                token_type_ids = _check_ids(token_type_ids, "token_type_ids", cfg.type_vocab_size)
                if token_type_ids.shape != input_ids.shape:
                    raise ValueError(
                        f"token_type_ids shape {tuple(token_type_ids.shape)} does not match input_ids {(B, T)}"
                    )
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x)), attention_mask


def _check_ids(ids: Tensor, name: str, size: int) -> Tensor:
    if not torch.is_tensor(ids):
        raise ValueError(f"{name} must be a tensor of shape (B, T), got {type(ids).__name__}")
    if ids.dim() == 1:
        raise ValueError(f"{name} has shape {tuple(ids.shape)}; give a batch (B, T), e.g. ids[None]")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {ids.dtype}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} holds id {bad}, outside the table of {size} rows [0, {size}); check that "
                "the tokenizer matches the model's vocabulary"
            )
    return ids

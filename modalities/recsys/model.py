"""BERT4Rec: item frontend (item embedding + learned positions) -> shared backbone -> output
layer tied to the item embeddings, with a bias (Sun et al., 2019).

Registered as the architecture "bert4rec": ``save_encoder(model, folder)`` writes the whole network
(encoder and output layer) and ``load_encoder(folder)`` reads it back, so an exported folder can
both embed histories and rank items."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor, nn

from ..backbone import MaskedLMHead, TokenEncoder, TokenEncoderConfig
from ..backbone.dropout import FastDropout
from ..backbone.linear import linear
from ..hub import register_architecture


@dataclass
class BERT4RecConfig:
    num_items: int = 0  # real items; ids 1..num_items (0 = PAD, num_items + 1 = MASK); 0 in a config: from the data
    max_length: int = 200  # longest history seen (MovieLens: 200)
    hidden_size: int = 64  # paper: 64
    num_layers: int = 2  # paper: 2
    num_heads: int = 2  # paper: 2
    intermediate_size: int = 256  # paper: 4 x hidden
    dropout: float = 0.2  # paper: 0.2 on hidden states and attention
    attention_dropout: float | None = None  # on the attention probabilities; None: ``dropout``
    attention_backend: str = "unpadded"  # eager | sdpa | unpadded
    causal: bool = False  # False: BERT4Rec (bidirectional); True: SASRec (each position sees the past only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BERT4RecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"BERT4RecConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def encoder_config(self) -> TokenEncoderConfig:
        return TokenEncoderConfig(
            vocab_size=self.num_items + 2, type_vocab_size=0, pad_token_id=0,
            max_position_embeddings=self.max_length, hidden_size=self.hidden_size,
            num_layers=self.num_layers, num_heads=self.num_heads, intermediate_size=self.intermediate_size,
            hidden_dropout=self.dropout,
            attention_dropout=self.dropout if self.attention_dropout is None else self.attention_dropout,
            attention_backend=self.attention_backend, layer_norm_eps=1e-12, causal=self.causal,
        )


def _fast_dropouts(module: nn.Module) -> None:
    """Every ``nn.Dropout`` under ``module`` becomes a ``FastDropout`` of the same p (no weights change)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout):
            setattr(module, name, FastDropout(child.p))
        else:
            _fast_dropouts(child)


# the output layer's weight IS the item embedding: stored once, under the embedding's name
TIED = {"head.embedding.weight": "encoder.frontend.word_embeddings.weight"}


def _drop_tied(module, state_dict, prefix, local_metadata) -> None:
    for tied in TIED:
        state_dict.pop(prefix + tied, None)


def _restore_tied(module, state_dict, prefix, *args) -> None:
    for tied, source in TIED.items():
        if prefix + source in state_dict:  # older checkpoints stored both names: the same tensor
            state_dict[prefix + tied] = state_dict[prefix + source]


@register_architecture(BERT4RecConfig)
class BERT4Rec(nn.Module):
    architecture = "bert4rec"  # name written into checkpoint folders

    def __init__(self, config: BERT4RecConfig):
        super().__init__()
        self.config = config
        self.encoder = TokenEncoder(config.encoder_config())
        c = self.encoder.config
        self.head = MaskedLMHead(c.hidden_size, self.encoder.embeddings, c.activation, c.layer_norm_eps)
        _fast_dropouts(self.encoder)  # the hidden-state dropouts; attention's stays inside its kernel
        self.register_state_dict_post_hook(_drop_tied)  # safetensors refuses two names for one tensor
        self.register_load_state_dict_pre_hook(_restore_tied)

    @property
    def mask_id(self) -> int:
        return self.config.num_items + 1

    def set_attention_backend(self, name: str) -> None:
        self.encoder.set_attention_backend(name)

    def forward(self, items: Tensor, mask: Tensor) -> Tensor:
        """items (B, T) ids, mask (B, T) -> hidden states (B, T, D)."""
        return self.encoder(input_ids=items, attention_mask=mask).last_hidden_state

    def item_scores(self, hidden: Tensor) -> Tensor:
        """hidden (..., D) -> scores over real items (..., num_items); column j is item j + 1.
        The head's own output layer with the PAD and MASK rows left out of the product (not sliced off
        after it: that copied the scores and zero-filled a full-width gradient)."""
        head, n = self.head, self.config.num_items
        z = head.norm(head.act(head.dense(hidden)))  # (..., D)
        return linear(z, head.embedding.weight[1 : n + 1], head.bias[1 : n + 1])

    def candidate_scores(self, hidden: Tensor, columns: Tensor) -> Tensor:
        """hidden (M, D), columns (M, C) item columns (item id - 1) -> scores (M, C), the same values
        ``item_scores`` gives those columns, without scoring the whole catalogue."""
        head = self.head
        z = head.norm(head.act(head.dense(hidden)))  # (M, D)
        w = head.embedding.weight[columns + 1]  # (M, C, D)
        return (w @ z[:, :, None]).squeeze(-1) + head.bias[columns + 1]

    def query_sequence(self, history: list[int]) -> list[int]:
        """The input that scores the item after ``history``: its last ``max_length - 1`` items + MASK."""
        return history[-(self.config.max_length - 1) :] + [self.mask_id]

    def user_vectors(self, histories: list[list[int]]) -> Tensor:
        """Remapped-id histories -> (B, D): the hidden state at the last position of
        ``query_sequence`` (BERT4Rec: a MASK after the history), the vector that scores the next item."""
        if any(not h for h in histories):
            raise ValueError("a history is empty: give at least one item per user")
        bad = [i for h in histories for i in h if not 1 <= i <= self.config.num_items]
        if bad:
            raise ValueError(f"histories hold unknown item ids {bad[:5]}; valid ids are 1..{self.config.num_items}")
        seqs = [self.query_sequence(h) for h in histories]
        T = max(len(s) for s in seqs)
        items = torch.zeros(len(seqs), T, dtype=torch.long)  # (B, T), PAD = 0 on the right
        mask = torch.zeros(len(seqs), T, dtype=torch.bool)
        for b, s in enumerate(seqs):
            items[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = True
        hidden = self(items.to(self.head.bias.device), mask.to(self.head.bias.device))  # (B, T, D)
        last = mask.sum(1) - 1  # (B,) the MASK position
        return hidden[torch.arange(len(seqs)), last.to(hidden.device)]

    @torch.no_grad()
    def recommend(self, history: list[int], k: int = 10, exclude_seen: bool = True) -> list[int]:
        """Top-k remapped item ids after ``history`` (remapped ids), seen items excluded."""
        bad = [i for i in history if not 1 <= i <= self.config.num_items]
        if bad:
            raise ValueError(f"history holds unknown item ids {bad[:5]}; valid ids are 1..{self.config.num_items}")
        if not history:
            raise ValueError("history is empty: give at least one item")
        scores = self.item_scores(self.user_vectors([history])[0])
        if exclude_seen:
            scores[torch.tensor(history) - 1] = float("-inf")
        return (scores.topk(min(k, len(scores))).indices + 1).tolist()


@dataclass
class SASRecConfig(BERT4RecConfig):
    """SASRec (Kang & McAuley, 2018) on the same frontend and tied output layer: causal attention,
    the next item predicted at every position. Defaults: the SASRec+CE recipe of Klenitskiy &
    Vasilev (RecSys 2023) at BERT4Rec's size."""

    causal: bool = True

    def __post_init__(self) -> None:
        if not self.causal:
            raise ValueError("SASRecConfig: causal must be True (a bidirectional model is BERT4Rec)")


@register_architecture(SASRecConfig)
class SASRec(BERT4Rec):
    """BERT4Rec's network with causal attention; no MASK is fed: the hidden state at a history's
    last item scores the item after it."""

    architecture = "sasrec"

    def __init__(self, config: SASRecConfig):
        super().__init__(config)

    def query_sequence(self, history: list[int]) -> list[int]:
        return history[-self.config.max_length :]

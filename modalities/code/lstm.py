"""The CuBERT paper's recurrent baseline: a bidirectional LSTM over the same subword ids.

Called like the token encoders (``encoder(input_ids=..., attention_mask=...)``), it returns an
``EncoderOutput`` whose ``last_hidden_state`` (B, T, 2 * hidden/2 = hidden) is zero at padding,
so the same classification and pointer heads sit on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..backbone import EncoderOutput


@dataclass
class BiLSTMConfig:
    vocab_size: int = 16384  # rows of the token embedding (>= the tokenizer's size)
    embedding_size: int = 128  # token embedding width
    hidden_size: int = 256  # output width: forward and backward halves of hidden_size // 2 each
    num_layers: int = 2  # stacked bidirectional layers
    dropout: float = 0.1  # between layers and on the embeddings
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % 2:
            raise ValueError(f"BiLSTMConfig: hidden_size must be even (two directions), got {self.hidden_size}")


class BiLSTMEncoder(nn.Module):
    architecture = "bilstm_encoder"

    def __init__(self, config: BiLSTMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_size, config.hidden_size // 2, num_layers=config.num_layers, bidirectional=True,
            batch_first=True, dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    @property
    def embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> EncoderOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        if int(input_ids.max()) >= self.config.vocab_size:
            raise ValueError(f"input_ids hold id {int(input_ids.max())} but the BiLSTM has {self.config.vocab_size} rows")
        B, T = input_ids.shape
        x = self.dropout(self.embed(input_ids))  # (B, T, E)
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
        h = h * attention_mask[..., None].to(h.dtype)
        return EncoderOutput(last_hidden_state=h, mask=attention_mask, hidden_states=(h,) if output_hidden_states else None)

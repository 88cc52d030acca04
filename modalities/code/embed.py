"""A pretrained code encoder as one folder, and vectors for Python sources.

A *code encoder folder* holds the encoder (a Tessera checkpoint: config.json + model.safetensors)
and the code tokenizer it was trained with (tokenizer.json + code_tokenizer.json, or a CuBERT
vocabulary file beside an HF-BERT-format CuBERT checkpoint). Every ``tessera fit`` of a code config writes one
from a masked-LM pretraining checkpoint.

    save_code_encoder(encoder, tokenizer, "runs/code/encoder")
    encoder, tokenizer = load_code_encoder("runs/code/encoder")       # also a CuBERT folder
    vectors, info = embed_code(encoder, tokenizer, sources)            # (N, D) float32, unit length
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backbone.pooling import create_pooler
from ..hub import load_encoder, save_encoder
from .cubert import find_cubert_vocab, load_cubert
from .tokenizer import META_FILE, CodeTokenizer, load_code_tokenizer


def save_code_encoder(encoder: nn.Module, tokenizer: CodeTokenizer, folder: str | Path, meta: dict | None = None) -> Path:
    """Write the encoder and its tokenizer into one folder (safetensors weights)."""
    if tokenizer.vocab_size > encoder.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the encoder's embedding only "
                         f"{encoder.config.vocab_size} rows; save the tokenizer the encoder was trained with")
    out = save_encoder(encoder, folder, meta={"tokenizer": tokenizer.vocab.kind, **(meta or {})})
    tokenizer.save(out)
    return out


def load_code_encoder(folder: str | Path, attention_backend: str | None = None) -> tuple[nn.Module, CodeTokenizer]:
    """(encoder in eval mode, CodeTokenizer) from a folder written by ``save_code_encoder`` or a
    CuBERT folder (HF BERT format with its *vocab*.txt)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; give a code encoder folder (every code `tessera fit` writes <log dir>/encoder)")
    if not ((folder / META_FILE).is_file() or (folder / "tokenizer.json").is_file()):
        try:
            find_cubert_vocab(folder)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{folder} holds no code tokenizer ({META_FILE} + tokenizer.json) and no CuBERT "
                                    "vocabulary; export the encoder with `tessera export RUN OUT`") from e
        return load_cubert(folder, attention_backend=attention_backend)  # pairs and checks the vocabulary
    tokenizer = load_code_tokenizer(folder)
    encoder = load_encoder(folder, attention_backend=attention_backend)
    if tokenizer.vocab_size > encoder.config.vocab_size:
        raise ValueError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the encoder's embedding "
                         f"{encoder.config.vocab_size} rows; the folder pairs an encoder with another tokenizer")
    return encoder, tokenizer


@dataclass
class Embedded:
    """What became of one source: its token count (without [CLS]/[SEP]), whether it was cut to
    ``max_length``, and the lexer's complaint (the vector is then of the best-effort tokens)."""

    tokens: int
    truncated: bool
    error: str | None


@torch.inference_mode()
def embed_code(encoder: nn.Module, tokenizer: CodeTokenizer, sources: Sequence[str | bytes], max_length: int = 512,
               pooling: str = "mean", batch_size: int = 32, normalize: bool = True, autocast: bool = False,
               progress=None) -> tuple[torch.Tensor, list[Embedded]]:
    """One vector per source: [CLS] code [SEP] through the encoder, pooled over the real tokens.

    Sources are batched by length (little padding; the unpadded backbone drops it anyway) and
    returned in input order. A source the lexer rejects is embedded from its best-effort tokens
    with the complaint in its ``Embedded.error``; an empty one gives [CLS] [SEP] only.

    Args:
        max_length: tokens per source including [CLS] and [SEP]; longer sources are cut (flagged).
            Capped at the encoder's learned position table, if it has one.
        pooling: "mean", "max", "cls", ... (``modalities.backbone.POOLERS``).
        normalize: unit-length vectors (cosine similarity = dot product).
        autocast: bf16 autocast on the encoder's device (AVX512-BF16 CPUs, GPUs).
        progress: a callable wrapping the batch iterator (e.g. ``tqdm``), or None.
    """
    limit = getattr(encoder.config, "max_length", None)  # a learned position table's size; None: any length
    max_length = min(max_length, limit) if limit is not None else max_length
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS] code [SEP], got {max_length}")
    pool = create_pooler(pooling, encoder.config.hidden_size)
    device = next(encoder.parameters()).device
    encs = tokenizer.encode_batch(list(sources))
    info = [Embedded(len(e.ids), len(e.ids) > max_length - 2, e.error) for e in encs]
    order = np.argsort([min(len(e.ids), max_length) for e in encs], kind="stable")
    out = torch.empty(len(encs), encoder.config.hidden_size)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in progress(batches) if progress is not None else batches:
        rows = [np.concatenate([[tokenizer.cls_id], encs[i].ids[: max_length - 2], [tokenizer.sep_id]]) for i in idx]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.bool)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.from_numpy(r.astype(np.int64))
            mask[b, : len(r)] = True
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out[torch.as_tensor(idx)] = pool(h.float(), mask).cpu()
    if normalize:
        out = nn.functional.normalize(out, dim=-1)
    return out, info

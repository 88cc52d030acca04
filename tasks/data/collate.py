"""Batch helpers shared by the token data modules: padding and cloze masking."""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = -100  # label of unmasked positions (cross-entropy ignore_index)


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of ints (Python hashes int tuples the same in every process)."""
    return torch.Generator().manual_seed(hash(key) & (2**63 - 1))


def pad_batch(seqs: list[Tensor], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad 1-d id tensors to the longest: ids (B, T) long, mask (B, T) bool."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = True
    return ids, mask


def mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    mask_token_id: int,
    random_range: tuple[int, int],
    ratio: float,
    generator: torch.Generator | None = None,
    replace_with_mask: float = 0.8,
    replace_with_random: float = 0.1,
    word_starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """ids (B, T), maskable (B, T) bool -> (masked inputs, labels with -100 off the chosen positions).

    Of the chosen positions, ``replace_with_mask`` become MASK, ``replace_with_random`` a random
    id from ``random_range``, the rest stay (BERT: 0.8 / 0.1; BERT4Rec: 1.0 / 0.0). Every row
    with a maskable token gets at least one masked position.

    ``word_starts`` (B, T) bool, True where a word begins (whole-word masking, as BERT's later
    models): ``ratio`` of the words are chosen and every subword of a chosen word is predicted
    (each still replaced 80 / 10 / 10 on its own, as BERT does). A word must lie within the
    maskable positions or outside them; the forced word of an empty row is a whole word too.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    u = torch.rand(ids.shape, generator=generator)  # (B, T)
    if word_starts is not None:  # every subword takes the draw of its word's first subword
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        first = torch.where(word_starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
        u = u.gather(1, first)
    chosen = (u < ratio) & maskable
    # rows left without a masked token get their most-likely-to-be-chosen maskable one (word)
    empty = ~chosen.any(dim=1) & maskable.any(dim=1)
    if empty.any():
        lowest = u.masked_fill(~maskable, 2.0)
        if word_starts is None:
            chosen[empty, lowest.argmin(dim=1)[empty]] = True
        else:
            chosen[empty] = (lowest == lowest.min(dim=1, keepdim=True).values)[empty] & maskable[empty]
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    action = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (action < replace_with_mask)] = mask_token_id
    swap = chosen & (action >= replace_with_mask) & (action < replace_with_mask + replace_with_random)
    inputs[swap] = torch.randint(*random_range, (int(swap.sum()),), generator=generator, dtype=ids.dtype)
    return inputs, labels

"""The data -> model contract: what a data module tells the system it feeds, in one small dataclass.

    spec = spec_of(self.trainer)          # in a system's setup: None without a data module
    require_vocab(spec, own_vocab, "model.init_args.encoder.init_args.config.vocab_size")

Every data module exposes ``spec`` (after ``setup``: before it, the sizes it has not read yet are None).
Systems read the contract through here, never by reaching into the data module's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    modality: str  # "text", "code", "audio", "recsys", ... (the exported encoder folder's meta.modality)
    vocab_size: int | None = None  # ids the tokenizer emits (token modalities); the embedding needs >= this
    num_items: int | None = None  # item ids + specials the sequences use (recsys); the model needs exactly this
    mask_token_id: int | None = None  # the tokenizer's [MASK] id (token modalities), for objectives that corrupt


class TokenSpec:
    """``spec`` for data modules whose ``setup`` sets ``tokenizer_vocab_size`` (text, code, cxr reports)."""

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.modality, vocab_size=getattr(self, "tokenizer_vocab_size", None),
                        mask_token_id=getattr(self, "mask_token_id", None))


def spec_of(trainer) -> DataSpec | None:
    """The contract of the trainer's data module, or None (a system used without a data module)."""
    return getattr(getattr(trainer, "datamodule", None), "spec", None)


def require_vocab(spec: DataSpec | None, own: int, option: str) -> None:
    """The model's embedding must cover every id the data's tokenizer emits."""
    if spec is not None and spec.vocab_size is not None and spec.vocab_size > own:
        raise ValueError(f"the tokenizer has {spec.vocab_size} tokens but the model's vocab_size is {own}; "
                         f"set {option} >= {spec.vocab_size}")

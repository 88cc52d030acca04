from .collate import IGNORE, mask_tokens, pad_batch
from .text import MaskedTextDataModule
from .recsys import SequenceDataModule
from .sampler import EpochBatchSampler, ResumableDataLoader

__all__ = ["IGNORE", "EpochBatchSampler", "MaskedTextDataModule", "pad_batch", "ResumableDataLoader", "SequenceDataModule", "mask_tokens"]

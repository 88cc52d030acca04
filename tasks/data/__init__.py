from .collate import IGNORE, mask_tokens, pad_batch
from .recsys import SequenceDataModule
from .sampler import EpochBatchSampler, ResumableDataLoader
from .text import MaskedTextDataModule

__all__ = ["IGNORE", "EpochBatchSampler", "MaskedTextDataModule", "pad_batch", "ResumableDataLoader", "SequenceDataModule", "mask_tokens"]

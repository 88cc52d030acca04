from .mlm import MaskedTextDataModule, mask_tokens
from .recsys import SequenceDataModule
from .sampler import EpochBatchSampler, ResumableDataLoader

__all__ = ["EpochBatchSampler", "MaskedTextDataModule", "ResumableDataLoader", "SequenceDataModule", "mask_tokens"]

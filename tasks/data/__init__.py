from .mlm import MaskedTextDataModule, mask_tokens
from .sampler import EpochBatchSampler, ResumableDataLoader

__all__ = ["EpochBatchSampler", "MaskedTextDataModule", "ResumableDataLoader", "mask_tokens"]

"""A data loader that resumes mid-epoch: Lightning saves its ``state_dict`` in checkpoints.

The batch order of an epoch is a permutation seeded by (seed, epoch), sharded by rank, so a
run restarted from a mid-epoch checkpoint sees exactly the batches it had not seen yet.
Each index is handed to the dataset as ``(epoch, index)``, so per-sample randomness (e.g. MLM
masks) can be seeded by it and survive a restart too.
With more than one process, set ``trainer.use_distributed_sampler: false`` (this sampler
shards by rank itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(self, size: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if size < 1:
            raise ValueError("EpochBatchSampler: the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"EpochBatchSampler: batch_size must be >= 1, got {batch_size}")
        self.size, self.batch_size, self.shuffle, self.seed, self.drop_last = size, batch_size, shuffle, seed, drop_last
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch handed to the consumer
        # batches of this epoch the training loop has finished; the data module points this at
        # Lightning's progress counter, which (unlike `consumed`) does not count prefetched batches
        self.progress: Callable[[], int] = lambda: self.consumed
        # whether the epoch has ended (Lightning's loop also ends it early, at `limit_train_batches`)
        self.epoch_ended: Callable[[], bool] = lambda: self.progress() >= len(self)
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip), from load_state_dict
        # Lightning tells samplers the epoch through `loader.sampler` or `loader.batch_sampler.sampler`
        # (lightning.fabric.utilities.data._set_sampler_epoch), never through the batch sampler itself
        self.sampler = _EpochHandle(self)

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        rank, world = self._rank_world()
        per_rank = len(order) // world  # equal shards: every rank runs the same number of steps
        order = order[rank * per_rank : (rank + 1) * per_rank]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        _, world = self._rank_world()
        n = self.size // world
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        self.consumed = skip
        for batch in self._batches()[skip:]:
            self.consumed += 1
            yield [(self.epoch, i) for i in batch]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": int(self.progress()), "seed": self.seed,
                "epoch_ended": bool(self.epoch_ended())}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint was written with data seed {state['seed']}, this run uses {self.seed}")
        epoch, done = state["epoch"], state["batches_done"]
        if state.get("epoch_ended", done >= len(self)):  # saved at the end of its epoch: the next iterator
            # starts the next epoch (loader workers ask for batches as soon as the iterator exists, before
            # Lightning's set_epoch)
            self.epoch, self._resume = epoch + 1, None
        else:
            self.epoch, self._resume = epoch, (epoch, done)


class _EpochHandle:
    """``batch_sampler.sampler``: where Lightning's epoch reaches an ``EpochBatchSampler``."""

    def __init__(self, owner: EpochBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


def resumable_train_loader(dataset, batch_size: int, seed: int, trainer=None, **kwargs) -> ResumableDataLoader:
    """A shuffled, rank-sharded, mid-epoch-resumable training loader; with a trainer, its
    checkpointed position is the training loop's count of finished batches."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=True, seed=seed)
    if trainer is not None:
        loop = trainer.fit_loop.epoch_loop
        sampler.progress = lambda: loop.batch_progress.current.processed
        sampler.epoch_ended = lambda: loop.batch_progress.is_last_batch
    return ResumableDataLoader(dataset, sampler, **kwargs)


class ResumableDataLoader(DataLoader):
    """A DataLoader over an ``EpochBatchSampler``; Lightning checkpoints its state."""

    def __init__(self, dataset, batch_sampler: EpochBatchSampler, **kwargs):
        # every new iterator draws its workers' base seed from this generator: from the global one, a new
        # epoch's iterator would shift the global random state (dropout's) by one draw in an uninterrupted
        # run, but not in a run resumed at that epoch boundary, which builds its iterator before the
        # checkpoint's random state is restored
        kwargs.setdefault("generator", torch.Generator().manual_seed(batch_sampler.seed))
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)

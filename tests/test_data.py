"""MLM masking, the resumable sampler, and the text data module on a corpus the test writes."""

import pytest
import torch

from modalities.text import CorpusStats, read_documents
from tasks.data import EpochBatchSampler, MaskedTextDataModule, mask_tokens
from tasks.data.collate import IGNORE


def test_mask_tokens_follows_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 256), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # e.g. [CLS]
    inputs, labels = mask_tokens(ids, maskable, mask_token_id=4, random_range=(5, 1000), ratio=0.3, generator=g)
    chosen = labels != IGNORE
    assert not chosen[:, 0].any()
    assert abs(chosen.float().mean().item() - 0.3 * 255 / 256) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unchosen positions are untouched
    n = chosen.sum().item()
    as_mask = (inputs[chosen] == 4).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.02
    assert abs(kept - 0.1) < 0.02  # (a random swap rarely lands on the same id)
    assert abs(1 - as_mask - kept - 0.1) < 0.02


def test_whole_word_masking_predicts_every_subword_of_a_chosen_word():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (64, 200), generator=g)
    starts = torch.rand(ids.shape, generator=g) < 0.4  # words of 2.5 subwords on average
    starts[:, :2] = True
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # [CLS], a word of its own
    inputs, labels = mask_tokens(ids, maskable, 4, (5, 1000), 0.3, g, word_starts=starts)
    chosen = labels != IGNORE
    word = starts.long().cumsum(1)  # word number of every position, per row
    for r in range(ids.shape[0]):
        for w in word[r].unique():
            at = word[r] == w
            assert chosen[r, at].all() or not chosen[r, at].any()  # a word is predicted whole or not at all
    chosen_words = chosen & starts
    assert abs(chosen_words.sum().item() / starts[:, 1:].sum().item() - 0.3) < 0.02  # ratio = share of words
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    # a row whose only maskable word has three subwords gets that whole word at a tiny ratio
    ids, maskable = torch.randint(5, 100, (20, 6)), torch.zeros(20, 6, dtype=torch.bool)
    maskable[:, 2:5] = True
    starts = torch.tensor([True, True, True, False, False, True]).expand(20, 6)
    _, labels = mask_tokens(ids, maskable, 4, (5, 100), 0.01, word_starts=starts)
    assert torch.equal(labels != IGNORE, maskable)


def test_every_row_gets_a_masked_token():
    ids = torch.randint(5, 100, (50, 4))
    maskable = torch.zeros_like(ids, dtype=torch.bool)
    maskable[:, 1] = True  # one maskable token per row; ratio 0.01 would often choose none
    maskable[0] = False  # a row with nothing maskable stays unmasked
    _, labels = mask_tokens(ids, maskable, 4, (5, 100), 0.01)
    assert (labels[1:, 1] != IGNORE).all() and (labels[0] == IGNORE).all()
    with pytest.raises(ValueError, match="mask ratio"):
        mask_tokens(ids, maskable, 4, (5, 100), 1.5)


def test_sampler_resumes_mid_epoch_and_shards_equal():
    s = EpochBatchSampler(103, 10, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == len(s) == 11
    assert sorted(i for b in full for _, i in b) == list(range(103))
    assert all(e == 2 for b in full for e, _ in b)
    s.progress = lambda: 4  # the loop finished 4 batches
    state = s.state_dict()
    fresh = EpochBatchSampler(103, 10, seed=3)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)
    assert list(fresh) == full[4:]
    assert list(fresh) == full  # the skip applies once
    other = EpochBatchSampler(103, 10, seed=3)
    other.set_epoch(3)
    assert list(other) != full  # a new order every epoch
    with pytest.raises(ValueError, match="data seed"):
        EpochBatchSampler(103, 10, seed=4).load_state_dict(state)


def test_a_state_saved_at_an_epochs_end_resumes_at_the_next_epochs_first_batch():
    s = EpochBatchSampler(103, 10, seed=3)
    s.progress = lambda: len(s)  # every batch of epoch 0 done
    fresh = EpochBatchSampler(103, 10, seed=3)
    fresh.load_state_dict(s.state_dict())
    nxt = EpochBatchSampler(103, 10, seed=3)
    nxt.set_epoch(1)
    assert list(fresh) == list(nxt)  # no set_epoch needed: a worker loader iterates before Lightning calls it


def test_lightning_gives_every_epoch_a_new_order_and_new_sample_seeds(tmp_path):
    """Lightning calls set_epoch on `loader.sampler` or `loader.batch_sampler.sampler`, never on the
    batch sampler itself: each epoch must still see its own permutation and (epoch, index) keys."""
    import lightning as L

    from tasks.data.sampler import resumable_train_loader

    class Keys(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, key):
            return torch.tensor(key)  # (epoch, index)

    class Record(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch.tolist())
            return (self.w * 0).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Record()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, resumable_train_loader(Keys(), 4, seed=0, trainer=trainer))
    epochs = [model.seen[k:k + 3] for k in (0, 3, 6)]
    assert [{e for b in ep for e, _ in b} for ep in epochs] == [{0}, {1}, {2}]
    orders = [[i for b in ep for _, i in b] for ep in epochs]
    assert all(sorted(o) == list(range(12)) for o in orders) and len({tuple(o) for o in orders}) == 3


def test_a_new_loader_iterator_leaves_the_global_random_state_alone():
    """Dropout draws from the global generator: an epoch's new loader iterator must not shift it, or a run
    resumed at that epoch's start (its iterator built before the checkpoint's state is restored) drifts."""
    from tasks.data.sampler import resumable_train_loader

    loader = resumable_train_loader(list(range(8)), 4, seed=0)
    before = torch.random.get_rng_state()
    iter(loader)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_read_documents_counts_bad_records(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\n\n\nsecond doc\n")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    stats = CorpusStats()
    docs = list(read_documents(tmp_path, stats))
    assert [d for _, d in docs] == ["first doc", "second doc"]
    assert stats.skipped["unreadable or non-UTF-8 file"] == 1 and stats.skipped["empty document"] >= 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_documents(tmp_path / "missing"))


def test_data_module_on_a_written_corpus(text_corpus, tmp_path):
    dm = MaskedTextDataModule(corpus=str(text_corpus), vocab_size=300, max_length=24, batch_size=8,
                              val_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.stats["train_documents"] + dm.stats["val_documents"] == 400
    assert dm.stats["val_documents"] > 0
    batch = next(iter(dm.train_dataloader()))
    B, T = batch["input_ids"].shape
    assert B == 8 and T <= 24
    assert batch["attention_mask"][:, 0].all()
    assert ((batch["labels"] != IGNORE) <= batch["attention_mask"]).all()
    assert (batch["labels"] != IGNORE).any(dim=1).all()
    v1 = next(iter(dm.val_dataloader()))
    v2 = next(iter(dm.val_dataloader()))
    assert torch.equal(v1["input_ids"], v2["input_ids"])  # validation masks are fixed

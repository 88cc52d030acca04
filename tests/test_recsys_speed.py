"""The recsys training-cost levers keep what they replace: the fast dropout is a dropout, the output
layer without PAD / MASK rows gives the same scores, evaluation stays fp32 under bf16 autocast, and the
data layouts (windows, last-position labels) give the training targets they promise."""

from __future__ import annotations

import torch

from modalities.recsys import BERT4Rec, BERT4RecConfig, SASRec, SASRecConfig
from modalities.recsys.model import FastDropout


def test_fast_dropout_zeroes_p_of_the_values_and_scales_the_rest():
    torch.manual_seed(0)
    drop = FastDropout(0.2).train()
    x = torch.ones(400_000)
    y = drop(x)
    zero = (y == 0).float().mean().item()
    assert abs(zero - 0.2) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1.25))
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    x = torch.randn(64, 33, requires_grad=True)  # an odd element count: the last draw is cut
    y = drop(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * 1.25)  # the gradient flows through the kept values only
    drop.eval()
    assert drop(x) is x
    torch.manual_seed(5)
    a = FastDropout(0.5).train()(torch.ones(1000))
    torch.manual_seed(5)
    assert torch.equal(a, FastDropout(0.5).train()(torch.ones(1000)))  # torch's seed decides the mask


def test_recsys_networks_use_the_fast_dropout_at_their_configured_rates():
    model = BERT4Rec(BERT4RecConfig(num_items=30, max_length=8, hidden_size=16, num_heads=2, intermediate_size=32,
                                    dropout=0.3, attention_dropout=0.0))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout | FastDropout)]
    assert drops and all(isinstance(m, FastDropout) and m.p == 0.3 for m in drops)
    assert model.encoder.config.attention_dropout == 0.0 and model.encoder.config.hidden_dropout == 0.3
    assert BERT4RecConfig(dropout=0.3).encoder_config().attention_dropout == 0.3  # None: the same as dropout


def test_item_scores_equal_the_output_layer_with_pad_and_mask_columns_cut():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=25, max_length=8, hidden_size=16, num_heads=2, intermediate_size=32))
    with torch.no_grad():
        model.head.bias.normal_()
    h = torch.randn(7, 16)
    want = model.head(h)[:, 1:26]
    got = model.item_scores(h)
    assert got.shape == (7, 25)
    assert torch.allclose(got, want, atol=1e-5)
    got.sum().backward()  # PAD's and MASK's rows get no gradient from scoring
    assert model.head.bias.grad[0] == 0 and model.head.bias.grad[26] == 0 and model.head.bias.grad[1] == 7


def test_evaluation_scores_stay_fp32_under_bf16_autocast():
    from tasks.recsys import SASRecSystem

    torch.manual_seed(0)
    system = SASRecSystem(SASRec(SASRecConfig(num_items=40, max_length=6, hidden_size=16, num_heads=2,
                                              intermediate_size=32))).eval()
    batch = {"items": torch.tensor([[3, 4, 5, 0], [7, 8, 9, 10]]), "mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool(),
             "last": torch.tensor([2, 3])}
    with torch.no_grad():
        want = system._scores(batch)
        with torch.autocast("cpu", torch.bfloat16):
            got = system._scores(batch)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_windows_make_every_item_after_the_first_a_label_once():
    from tasks.data.recsys import ClozeTrain

    histories = [list(range(1, 13)), [20, 21], [30]]
    ds = ClozeTrain(histories, max_length=5, sequences="windows", step=4)  # next-item: windows of 4 + 1 items
    windows = [ds[i][1].tolist() for i in range(len(ds))]
    assert windows == [[8, 9, 10, 11, 12], [4, 5, 6, 7, 8], [1, 2, 3, 4], [20, 21]]
    labels = sorted(x for w in windows for x in w[1:])
    assert labels == sorted([i for h in histories for i in h[1:]])  # every target once, the first items never
    cloze = ClozeTrain([list(range(1, 8))], max_length=3, sequences="windows")  # step = max_length: a partition
    assert [cloze[i][1].tolist() for i in range(len(cloze))] == [[5, 6, 7], [2, 3, 4], [1]]


def test_last_labels_keep_only_each_sequences_final_next_item(tmp_path):
    import pytest

    from tasks.data import SequenceDataModule

    dm = SequenceDataModule(dataset="x", objective="next", labels="last")
    dm.data = type("D", (), {"mask_id": 99})()
    batch = dm._collate_train([((0, 0), torch.tensor([1, 2, 3, 4])), ((0, 1), torch.tensor([5, 6]))])
    assert batch["labels"].tolist() == [[-100, -100, 4], [6, -100, -100]]
    assert batch["items"].tolist() == [[1, 2, 3], [5, 0, 0]]  # every earlier item is still fed
    with pytest.raises(ValueError, match="labels"):
        SequenceDataModule(dataset="x", objective="cloze", labels="last")
    with pytest.raises(ValueError, match="labels"):
        SequenceDataModule(dataset="x", objective="next", labels="first")


def test_batches_gathered_at_once_equal_the_row_by_row_batches():
    from tasks.data import SequenceDataModule
    from tasks.data.collate import pad_batch
    from tasks.data.recsys import ClozeTrain, PaddedRows

    histories = [list(range(1, 13)), [20, 21], [30], [40, 41, 42, 43, 44, 45]]
    for sequences, step in (("prefixes", None), ("windows", 4), ("windows", None)):
        ds = ClozeTrain(histories, max_length=5, sequences=sequences, step=step)
        keys = [(3, i) for i in torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()]
        batch = ds.__getitems__(keys)
        assert isinstance(batch, PaddedRows) and batch.keys == keys
        ids, mask = pad_batch([ds[k][1] for k in keys])
        assert torch.equal(batch.ids, ids) and torch.equal(batch.mask, mask), sequences
    assert isinstance(ClozeTrain(histories, 5, "histories").__getitems__([(0, 0)]), list)  # random windows: by row
    for objective, labels in (("cloze", "all"), ("next", "all"), ("next", "last")):
        dm = SequenceDataModule(dataset="x", objective=objective, labels=labels, mask_ratio=0.4, last_item_ratio=0.5)
        dm.data = type("D", (), {"mask_id": 99})()
        ds = ClozeTrain(histories, max_length=5, sequences="prefixes")
        keys = [(1, i) for i in range(0, len(ds), 2)]
        at_once = dm._collate_train(ds.__getitems__(keys))
        by_row = dm._collate_train([ds[k] for k in keys])
        assert at_once.keys() == by_row.keys()
        assert all(torch.equal(at_once[k], by_row[k]) for k in at_once), (objective, labels)

"""RecBole's full-sort numbers, re-derived without RecBole installed: our evaluator's ``full_history``
protocol gives RecBole 1.2.1's NDCG@10 and Hit@10 for the same scores, and the benchmark hands
RecBole our exact sequences through its atomic file format.

RecBole's rule, as its source has it (recbole 1.2.1):
  * ``trainer/trainer.py`` ``Trainer._full_sort_batch_eval``: scores over item ids 0..n (0 = PAD),
    ``scores[:, 0] = -inf``; ``history_index`` is None for sequential models
    (``data/dataloader/general_dataloader.py``, ``FullSortEvalDataLoader.collate_fn``), so nothing
    else is masked;
  * ``evaluator/collector.py`` ``eval_batch_collect``: ``topk`` of the scores, ``pos_matrix[u, i] = 1``
    for the held-out item, ``pos_idx`` = pos_matrix gathered at the top-k ids, ``pos_len`` = positives;
  * ``evaluator/metrics.py`` ``NDCG.metric_info``: dcg = cumsum of 1 / log2(rank + 1) at hits,
    idcg = cumsum of 1 / log2(i + 1) up to min(pos_len, k), NDCG@k = mean(dcg / idcg)[:, k - 1];
    ``Hit.metric_info``: cumsum(pos_index) > 0.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from modalities.recsys import build_sequences, read_interactions
from modalities.recsys.sequences import SequenceData
from tasks.metrics.ranking import RankingEvaluator

ROOT = Path(__file__).resolve().parents[1]


def recbole_full_sort(scores_with_pad: np.ndarray, targets: np.ndarray, k: int) -> dict[str, float]:
    """RecBole 1.2.1's full-sort NDCG@k and Hit@k, step by step as its collector and metrics compute them."""
    s = scores_with_pad.copy()
    s[:, 0] = -np.inf  # _full_sort_batch_eval: the padding item; no history mask for sequential models
    topk_idx = np.argsort(-s, axis=1, kind="stable")[:, :k]  # torch.topk (distinct scores: same order)
    pos_matrix = np.zeros_like(s, dtype=int)
    pos_matrix[np.arange(len(s)), targets] = 1  # positive_u = arange, positive_i = the held-out item
    pos_len = pos_matrix.sum(1)
    pos_index = np.take_along_axis(pos_matrix, topk_idx, axis=1).astype(bool)
    # NDCG.metric_info
    idcg_len = np.minimum(pos_len, k)
    iranks = np.tile(np.arange(1, k + 1, dtype=float), (len(s), 1))
    idcg = np.cumsum(1.0 / np.log2(iranks + 1), axis=1)
    for row, idx in enumerate(idcg_len):
        idcg[row, idx:] = idcg[row, idx - 1]
    dcg = np.cumsum(np.where(pos_index, 1.0 / np.log2(iranks + 1), 0), axis=1)
    ndcg = (dcg / idcg).mean(0)[k - 1]
    hit = (np.cumsum(pos_index, axis=1) > 0).mean(0)[k - 1]  # Hit.metric_info
    return {"ndcg": float(ndcg), "hit": float(hit)}


def test_full_history_reproduces_recboles_ndcg_and_hit_from_the_same_scores():
    g = torch.Generator().manual_seed(1)
    B, n = 300, 40
    scores = torch.randn(B, n, generator=g)  # column j = item j + 1, as our evaluator takes them
    targets = torch.randint(1, n + 1, (B,), generator=g)
    histories = [torch.randint(1, n + 1, (6,), generator=g) for _ in range(B)]
    for b in range(0, B, 3):  # some targets repeat a history item: RecBole keeps them ranked
        histories[b][0] = targets[b]
    ev = RankingEvaluator(torch.ones(n), negatives=0, mostpop=False)
    ev.update(scores, histories, targets, torch.arange(B))
    ours = ev.compute(ks=(1, 5, 10))["protocols"]
    with_pad = np.concatenate([np.zeros((B, 1)), scores.numpy()], 1)  # RecBole's columns: PAD, items 1..n
    for k in (1, 5, 10):
        rb = recbole_full_sort(with_pad, targets.numpy(), k)
        assert ours["full_history"]["model"][f"ndcg@{k}"] == pytest.approx(rb["ndcg"], abs=1e-12)
        assert ours["full_history"]["model"][f"hr@{k}"] == pytest.approx(rb["hit"], abs=1e-12)
    # and the history-removed protocol is not RecBole's number on these scores
    assert ours["full"]["model"]["ndcg@10"] != pytest.approx(recbole_full_sort(with_pad, targets.numpy(), 10)["ndcg"])


def test_scores_in_recboles_item_order_give_the_same_numbers_once_put_in_ours():
    """The benchmark's runner writes RecBole's columns (its own item ids) into ours by the items' tokens."""
    g = torch.Generator().manual_seed(2)
    B, n = 50, 30
    ours_items = [f"i{j}" for j in range(n)]
    rb_items = [ours_items[j] for j in torch.randperm(n, generator=g).tolist()]  # RecBole's id order
    rb_scores = torch.randn(B, n, generator=g)
    col_of = {tok: j for j, tok in enumerate(ours_items)}
    cols = torch.tensor([col_of[t] for t in rb_items])
    mine = torch.full((B, n), float("nan"))
    mine[torch.arange(B)[:, None], cols[None, :]] = rb_scores
    rb_targets = torch.randint(0, n, (B,), generator=g)  # RecBole's column of each target
    ev = RankingEvaluator(torch.ones(n), negatives=0, mostpop=False)
    ev.update(mine, [torch.tensor([1])] * B, cols[rb_targets] + 1, torch.arange(B))
    ours = ev.compute()["protocols"]["full_history"]["model"]["ndcg@10"]
    with_pad = np.concatenate([np.zeros((B, 1)), rb_scores.numpy()], 1)
    assert ours == pytest.approx(recbole_full_sort(with_pad, rb_targets.numpy() + 1, 10)["ndcg"], abs=1e-12)


def test_the_benchmark_feeds_recbole_our_sequences_in_our_order(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_recsys", ROOT / "scripts" / "bench_recsys.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # two items of user "7" share a timestamp in the source: our order keeps them as given
    data = SequenceData(users=["7", "u2"], sequences=[[1, 2, 3, 4, 5], [3, 1, 6, 2, 4, 5]],
                        items=["50", "172", "133", "9", "1", "2"])
    path = tmp_path / "x" / "x.inter"
    bench.write_recbole_inter(data, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"  # RecBole's typed header
    assert lines[1:3] == ["7\t50\t0", "7\t172\t1"]
    back = build_sequences(read_interactions(path, "recbole"), min_interactions=3)
    got = {u: [back.items[i - 1] for i in s] for u, s in zip(back.users, back.sequences, strict=True)}
    assert got == {u: [data.items[i - 1] for i in s] for u, s in zip(data.users, data.sequences, strict=True)}

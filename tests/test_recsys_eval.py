"""The one ranking evaluator: every protocol on hand-computed cases, RecBole's full-sort protocol,
the sampled candidates (fixed per user, never the history, small catalogues counted)."""

import math

import pytest
import torch

from tasks.metrics.ranking import RankingEvaluator, sample_candidates


def hand_case(negatives=10):
    # 6 items; one user: history [1, 2], target 3; MostPopular counts 5, 4, 3, 2, 1, 0
    ev = RankingEvaluator(torch.tensor([5.0, 4, 3, 2, 1, 0]), negatives=negatives, seed=0)
    scores = torch.tensor([[0.9, 0.8, 0.5, 0.7, 0.1, 0.2]])
    ev.update(scores, [torch.tensor([1, 2])], torch.tensor([3]), torch.tensor([0]))
    return ev.compute()


def test_every_protocol_reproduces_hand_computed_ranks_for_model_and_mostpop():
    report = hand_case()
    p = report["protocols"]
    assert set(p) == {"full", "full_history", "pop10", "uni10"}
    # full, history removed: candidates 3, 4, 5, 6; only item 4 (0.7) beats the target's 0.5 -> rank 1
    assert p["full"]["model"]["hr@1"] == 0 and p["full"]["model"]["hr@5"] == 1
    assert p["full"]["model"]["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert p["full"]["model"]["mrr"] == pytest.approx(1 / 2)
    # history kept (RecBole's sequential full sort): items 1, 2, 4 beat it -> rank 3
    assert p["full_history"]["model"]["mrr"] == pytest.approx(1 / 4)
    assert p["full_history"]["model"]["ndcg@5"] == pytest.approx(1 / math.log2(5))
    assert p["full_history"]["model"]["hr@1"] == 0 and p["full_history"]["model"]["ndcg@1"] == 0
    # MostPopular: nothing unseen is more popular than item 3 -> rank 0; with the history: rank 2
    assert p["full"]["mostpop"]["ndcg@1"] == 1 and p["full"]["mostpop"]["mrr"] == 1
    assert p["full_history"]["mostpop"]["mrr"] == pytest.approx(1 / 3)
    # 10 negatives asked, 3 unseen items left: all of them, counted; ranks as in full ranking
    for proto in ("pop10", "uni10"):
        assert p[proto] == p["full"]
        assert report["candidates"][proto] == {"requested": 10, "users_with_fewer": 1, "fewest": 3}
    assert set(p["full"]["model"]) == {f"{m}@{k}" for m in ("hr", "ndcg") for k in (1, 5, 10, 20)} | {"mrr"}


def test_full_history_is_recboles_full_sort_ndcg_at_10():
    """RecBole 1.2.1 full sort for sequential models: scores over [PAD] + items, PAD set to -inf
    (no history mask), top-k, NDCG@10 from the target's position: recomputed here from its rule."""
    g = torch.Generator().manual_seed(0)
    B, n = 64, 50
    scores = torch.randn(B, n, generator=g)
    targets = torch.randint(1, n + 1, (B,), generator=g)
    histories = [torch.randint(1, n + 1, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g) for _ in range(B)]
    ev = RankingEvaluator(torch.ones(n), negatives=0)
    ev.update(scores, histories, targets, torch.arange(B))
    ours = ev.compute()["protocols"]["full_history"]["model"]["ndcg@10"]
    padded = torch.cat([torch.zeros(B, 1), scores], 1)
    padded[:, 0] = float("-inf")  # RecBole: scores[:, 0] = -inf, nothing else masked
    top = padded.topk(10, dim=1).indices  # (B, 10) item ids
    hit = top == targets[:, None]
    pos = hit.float().argmax(1)
    recbole = torch.where(hit.any(1), 1 / torch.log2(pos.double() + 2), torch.zeros(B, dtype=torch.double)).mean()
    assert ours == pytest.approx(recbole.item(), abs=1e-12)
    assert ev.compute()["protocols"]["full"]["model"]["ndcg@10"] != pytest.approx(ours)  # the history does matter


def test_sampled_negatives_are_fixed_per_user_unseen_and_follow_popularity():
    n_items, B = 200, 300
    pop = torch.arange(n_items, 0, -1).double()  # item 1 the most popular
    exclude = torch.zeros(B, n_items, dtype=torch.bool)
    exclude[:, :5] = True  # items 1..5 seen by everyone
    users = torch.arange(B)
    cols, valid = sample_candidates(pop, exclude, 20, users, seed=3)
    assert valid.all() and not (cols < 5).any()
    assert all(len(set(r.tolist())) == 20 for r in cols)  # without replacement
    # the same user gets the same candidates in any batch, at any position
    sub, _ = sample_candidates(pop, exclude[:7], 20, users[100:107], seed=3)
    assert torch.equal(sub, cols[100:107])
    other, _ = sample_candidates(pop, exclude, 20, users, seed=4)
    assert not torch.equal(other, cols)
    # popularity-weighted: the top half of the catalogue is drawn far more than the bottom half
    top_half = (cols < n_items // 2).float().mean()
    uni, _ = sample_candidates(None, exclude, 20, users, seed=3)
    assert top_half > 0.65 and abs((uni < n_items // 2).float().mean() - 95 / 195) < 0.05


def test_a_constant_scorer_gets_no_free_hits_under_any_protocol():
    ev = RankingEvaluator(torch.ones(300), negatives=100)
    ev.update(torch.zeros(4, 300), [torch.tensor([1, 2])] * 4, torch.tensor([10, 20, 30, 40]), torch.arange(4))
    for proto, rows in ev.compute()["protocols"].items():
        assert rows["model"]["hr@10"] == 0, proto

"""Contrastive losses across processes: on a 2-process gloo group (CPU), the rank-averaged loss
and the gradients equal the single-process loss on the concatenated batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _full_batch(n: int = 8, d: int = 16):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    b = b + 0.5 * a  # some signal, so the loss is not flat
    group = torch.tensor([0, 1, 1, 2, 3, 3, 4, 5])[:n]  # rows 1,2 and 4,5 share an impression
    return a, b, group


def _grads(loss_fn, *tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss = loss_fn(*leaves)
    loss.backward()
    return loss.detach(), [t.grad for t in leaves]


def _check_close(got, want, what, rank):
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), f"rank {rank}: {what}: {got} vs {want}"


def _worker(rank: int, store: str, split: list[int]):
    from tasks.contrastive import InfoNCE, clip_loss, equal_rows

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        a, b, group = _full_batch(sum(split))
        lo, hi = sum(split[:rank]), sum(split[: rank + 1])
        n, N = hi - lo, sum(split)
        # --- InfoNCE (text towers), the local rows against every rank's keys --------------------
        for local_loss in (True, False):
            full_loss, (ga, gb) = _grads(lambda x, y: InfoNCE(0.1)(x, y, group), a, b)
            dist_fn = InfoNCE(0.1, rank=rank, world_size=WORLD, local_loss=local_loss)
            # DDP averages gradients over ranks; a rank's share of the global mean is n / N
            weight = n / N if local_loss else 1 / WORLD
            loss, (la, lb) = _grads(lambda x, y, w=weight, f=dist_fn: w * f(x, y, group[lo:hi]), a[lo:hi], b[lo:hi])
            total = loss.clone()
            dist.all_reduce(total)
            _check_close(total, full_loss, f"InfoNCE(local_loss={local_loss}) loss", rank)
            _check_close(la, ga[lo:hi], "InfoNCE query gradient", rank)
            _check_close(lb, gb[lo:hi], "InfoNCE key gradient (through the gather)", rank)
        # --- open_clip ClipLoss / SigLipLoss as CLIPSystem builds them ----------------------------
        # they need equal batch sizes: CLIPSystem cuts every rank to the smallest (equal_rows),
        # which is the single-process loss on the rows that are kept
        m = min(split)
        keep = torch.cat([torch.arange(sum(split[:r]), sum(split[:r]) + m) for r in range(WORLD)])
        a_rank, b_rank = equal_rows(a[lo:hi], b[lo:hi])
        assert a_rank.shape[0] == b_rank.shape[0] == m, f"rank {rank}: equal_rows kept {a_rank.shape[0]}, want {m}"
        a, b, lo, hi = a[keep], b[keep], rank * m, (rank + 1) * m
        scale = torch.tensor(10.0)
        for kind in ("clip", "siglip"):
            extra = {"logit_bias": torch.tensor(-5.0)} if kind == "siglip" else {}
            img, txt = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
            full_loss, (gi, gt) = _grads(lambda x, y, k=kind, e=extra: clip_loss(k)(x, y, scale, **e), img, txt)
            dist_fn = clip_loss(kind, rank=rank, world_size=WORLD)
            loss, (li, lt) = _grads(lambda x, y, e=extra, f=dist_fn: f(x, y, scale, **e) / WORLD, img[lo:hi], txt[lo:hi])
            total = loss.clone()
            dist.all_reduce(total)
            _check_close(total, full_loss, f"{kind} loss", rank)
            _check_close(li, gi[lo:hi], f"{kind} image gradient", rank)
            _check_close(lt, gt[lo:hi], f"{kind} text gradient", rank)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("split", [[4, 4], [3, 5]], ids=["even", "uneven"])
def test_gathered_losses_equal_the_full_batch_loss(tmp_path, split):
    mp.spawn(_worker, args=(str(tmp_path / "store"), split), nprocs=WORLD, join=True)


def test_info_nce_single_process_matches_the_definition():
    from tasks.contrastive import InfoNCE

    a, b, group = _full_batch()
    logits = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T / 0.1
    want = torch.nn.functional.cross_entropy(logits, torch.arange(8))
    _check_close(InfoNCE(0.1)(a, b), want, "InfoNCE without groups", 0)
    # with groups: the other member of a group is no negative, so the loss can only drop
    assert InfoNCE(0.1)(a, b, group) < want
    assert math.isfinite(InfoNCE(0.1)(a, b, group).item())

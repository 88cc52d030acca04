"""Training-step levers, each against its own "off", measured alternately in one run.

The model: a MiniLM-size (or BERT-base-size) token encoder with the ``unpadded`` backend, dropout 0,
on the bench_backbone ragged batches (32 sequences, 16..256 tokens, a new seeded batch every rep).
Levers:
    adamw       AdamW's update kernel: for-loop (torch's CPU default) vs foreach vs fused
                (``tasks.optim.adamw``), a full optimizer step on the model's parameters
    checkpoint  activation checkpointing (``Backbone.checkpointing``): fwd+bwd time and the bytes
                autograd keeps for backward (counted by saved-tensor hooks: contention cannot move it)
    dropout     BERT's 0.1 hidden and attention dropout, torch's way (``nn.Dropout``, SDPA's own dropout:
                one ``bernoulli_`` per element) vs the backbone's (``FastDropout``, ``attend``'s matmul
                path on CPU), fwd+bwd in fp32 and under bf16 autocast; also bf16 without dropout, SDPA's
                flash kernel vs the matmul path
    compile     ``Backbone.compile_layers()`` (inductor, dynamic token count): the compile time of the
                first step and of the first step at a new batch shape, then fwd+bwd time
Each timing is the median over reps of wall time and of this process's CPU time; ratios are
off / on (> 1: the lever is faster). The load average is printed at start and end.

    python scripts/bench_train_step.py [--size minilm] [--reps 5] [--levers adamw checkpoint compile]
        [--out results/train_step_levers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from modalities.backbone.config import TokenEncoderConfig
from modalities.backbone.encoder import TokenEncoder
from tasks.machine import machine_state
from tasks.optim import IMPLEMENTATIONS, adamw, param_groups

SIZES = {
    "minilm": dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}


def ragged_batch(seed: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 257, (n,), generator=g)
    mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]
    return torch.randint(1000, 30000, mask.shape, generator=g), mask


def model_of(size: str, dropout: float = 0.0) -> TokenEncoder:
    torch.manual_seed(0)
    return TokenEncoder(TokenEncoderConfig(**SIZES[size], hidden_dropout=dropout, attention_dropout=dropout,
                                           attention_backend="unpadded")).train()


def fwd_bwd(model, ids, mask) -> None:
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    proj = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(1))
    (out * mask[..., None] * proj).sum().backward()  # a random direction: sums of LayerNorm outputs are constant


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def alternate(cells: dict, reps: int, batch_seed: int = 100) -> dict:
    """cells: name -> fn(ids, mask); every rep runs every cell on the same new batch, in turn."""
    wall = {k: [] for k in cells}
    cpu = {k: [] for k in cells}
    for r in range(reps):
        ids, mask = ragged_batch(batch_seed + r)
        for name, fn in cells.items():
            w, c = timed(lambda fn=fn, ids=ids, mask=mask: fn(ids, mask))
            wall[name].append(w)
            cpu[name].append(c)
    return {k: {"wall_s": statistics.median(wall[k]), "cpu_s": statistics.median(cpu[k])} for k in cells}


def bench_adamw(size: str, reps: int) -> dict:
    model = model_of(size)
    ids, mask = ragged_batch(0)
    fwd_bwd(model, ids, mask)  # real gradients on every parameter
    opts = {impl: adamw(param_groups(model, 0.01), 1e-4, (0.9, 0.999), 1e-8, impl) for impl in IMPLEMENTATIONS}
    for opt in opts.values():
        opt.step()  # creates the state: the first step is not timed
    cells = {impl: (lambda ids, mask, opt=opt: opt.step()) for impl, opt in opts.items()}
    res = alternate(cells, reps * 4)
    base = res["for-loop"]
    for impl in res:
        res[impl]["speedup_vs_for_loop_wall"] = base["wall_s"] / res[impl]["wall_s"]
        res[impl]["speedup_vs_for_loop_cpu"] = base["cpu_s"] / res[impl]["cpu_s"]
    return res


def saved_bytes(model, ids, mask) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    proj = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(1))
    (out * mask[..., None] * proj).sum().backward()  # a random direction: sums of LayerNorm outputs are constant
    return total


def bench_checkpoint(size: str, reps: int) -> dict:
    off, on = model_of(size), model_of(size)
    on.backbone.checkpointing = True
    ids, mask = ragged_batch(0)
    fwd_bwd(off, ids, mask)
    g_off = [p.grad.clone() for p in off.parameters()]
    fwd_bwd(on, ids, mask)
    diff = max((p.grad - g).abs().max().item() for p, g in zip(on.parameters(), g_off, strict=True))
    res = alternate({"off": lambda i, m: fwd_bwd(off, i, m), "on": lambda i, m: fwd_bwd(on, i, m)}, reps)
    res["saved_bytes_off"] = saved_bytes(off, ids, mask)
    res["saved_bytes_on"] = saved_bytes(on, ids, mask)
    res["max_grad_difference"] = diff
    res["time_ratio_off_over_on_wall"] = res["off"]["wall_s"] / res["on"]["wall_s"]
    res["time_ratio_off_over_on_cpu"] = res["off"]["cpu_s"] / res["on"]["cpu_s"]
    res["saved_ratio_on_over_off"] = res["saved_bytes_on"] / res["saved_bytes_off"]
    return res


def bench_compile(size: str, reps: int) -> dict:
    off, on = model_of(size), model_of(size)
    on.backbone.compile_layers()
    first = timed(lambda: fwd_bwd(on, *ragged_batch(0)))[0]
    second = timed(lambda: fwd_bwd(on, *ragged_batch(1)))[0]  # a new token count: dynamic shapes
    ids, mask = ragged_batch(0)
    fwd_bwd(off, ids, mask)
    g_off = [p.grad.clone() for p in off.parameters()]
    fwd_bwd(on, ids, mask)
    rel = max(((p.grad - g).norm() / g.norm()).item() for p, g in zip(on.parameters(), g_off, strict=True))
    res = alternate({"off": lambda i, m: fwd_bwd(off, i, m), "on": lambda i, m: fwd_bwd(on, i, m)}, reps)
    res["compile_first_step_s"] = first
    res["compile_new_shape_step_s"] = second
    res["max_relative_grad_difference"] = rel
    res["time_ratio_off_over_on_wall"] = res["off"]["wall_s"] / res["on"]["wall_s"]
    res["time_ratio_off_over_on_cpu"] = res["off"]["cpu_s"] / res["on"]["cpu_s"]
    return res


def bench_dropout(size: str, reps: int) -> dict:
    from modalities.backbone import attention
    from modalities.backbone.dropout import FastDropout

    def torch_dropouts(model):
        for name, child in model.named_children():
            if isinstance(child, FastDropout):
                setattr(model, name, torch.nn.Dropout(child.p))
            else:
                torch_dropouts(child)
        return model

    fast, torch_way = model_of(size, 0.1), torch_dropouts(model_of(size, 0.1))
    plain = model_of(size)

    def step(model, matmul, bf16):
        def run(ids, mask):
            attention.MATMUL_ON_CPU = matmul
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    fwd_bwd(model, ids, mask)
            finally:
                attention.MATMUL_ON_CPU = True
        return run

    cells = {"fp32 torch": step(torch_way, False, False), "fp32 tessera": step(fast, True, False),
             "bf16 torch": step(torch_way, False, True), "bf16 tessera": step(fast, True, True),
             "bf16 no dropout sdpa": step(plain, False, True), "bf16 no dropout matmul": step(plain, True, True)}
    res = alternate(cells, reps)
    for a, b in (("fp32 torch", "fp32 tessera"), ("bf16 torch", "bf16 tessera"),
                 ("bf16 no dropout sdpa", "bf16 no dropout matmul")):
        res[f"{a} / {b}, cpu"] = res[a]["cpu_s"] / res[b]["cpu_s"]
        res[f"{a} / {b}, wall"] = res[a]["wall_s"] / res[b]["wall_s"]
    return res


LEVERS = {"adamw": bench_adamw, "checkpoint": bench_checkpoint, "compile": bench_compile, "dropout": bench_dropout}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="minilm", choices=list(SIZES))
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per cell (median)")
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    p.add_argument("--out", default="runs/bench/train_step_levers.json")
    a = p.parse_args()
    load_start = os.getloadavg()
    print(f"load average at start {load_start[0]:.2f} (1 min) on {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; size {a.size}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "size": a.size, "reps": a.reps,
            "cores": os.cpu_count(), "load_average_start": load_start, "machine_start": machine_state("start")}
    results = {}
    for lever in a.levers:  # written after every lever: a run cut short keeps what it measured
        results[lever] = res = LEVERS[lever](a.size, a.reps)
        res["load_average_after"] = os.getloadavg()
        print(f"[{lever}] load now {res['load_average_after'][0]:.2f}")
        print(json.dumps(res, indent=1))
        meta["load_average_end"] = res["load_average_after"]
        out.write_text(json.dumps({"meta": meta, "levers": results}, indent=1))
    meta["machine_end"] = machine_state("end")
    out.write_text(json.dumps({"meta": meta, "levers": results}, indent=1))
    print(f"load average at end {meta['load_average_end'][0]:.2f} (1 min); wrote {out}")


if __name__ == "__main__":
    main()

"""Backbone benchmark: Tessera's attention backends against transformers' BertModel (sdpa).

Same weights (converted by the HF importer), same batches, measured alternately in one run:
    ragged  32 sequences, lengths uniform in 16..256 (seeded)
    dense   32 x 128
for a MiniLM-size and a BERT-base-size config, forward (eval, no grad) and forward+backward
(train mode, dropout 0). ``tessera-unpadded-mkl`` is the unpadded backend with torch's
default fp32 linear kernel (MKL) instead of oneDNN: the share of the gain due to unpadding
alone. Throughput counts real tokens. GFLOP/s counts the useful FLOPs of the
real tokens only (linear layers 2*N*params-ish, attention 4*L*D per token and layer; backward
= 2x forward) against this machine's measured fp32 matmul peak (the faster of MKL and oneDNN).
``onnxruntime-fp32`` (forward cells, CPU): HF's model exported to ONNX and run by ONNX Runtime's CPU
execution provider with all graph optimisations; a benchmark-only extra (``pip install onnxruntime
onnxscript``): without it the column is skipped with a note.

    python scripts/bench_backbone.py [--reps 3] [--sizes minilm base] [--bf16] [--forward-only]
        [--impls tessera-unpadded onnxruntime-fp32] [--no-onnxruntime] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import BertConfig, BertModel

from modalities import TokenEncoder
from modalities.backbone.hf_bert import config_from_hf, convert_state_dict
from modalities.backbone.linear import onednn_available, use_onednn
from tasks.machine import matmul_peak

SIZES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
BACKENDS = ["eager", "sdpa", "unpadded", "unpadded_loop"]  # unpadded_loop: the per-sequence reference


def make_batches(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 257, (32,), generator=g)
    T = int(lengths.max())
    ragged_mask = torch.arange(T)[None] < lengths[:, None]
    ragged_ids = torch.randint(1000, 30000, (32, T), generator=g).masked_fill(~ragged_mask, 0)
    dense_ids = torch.randint(1000, 30000, (32, 128), generator=g)
    return {
        "ragged": (ragged_ids, ragged_mask.long()),
        "dense": (dense_ids, torch.ones_like(dense_ids)),
    }


def useful_flops(cfg: dict, mask: torch.Tensor) -> float:
    """Forward FLOPs on real tokens only (embedding lookups and norms ignored)."""
    D, F, Lyr = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    lengths = mask.sum(1).double()
    n = lengths.sum().item()
    linear = 2 * n * (4 * D * D + 2 * D * F)  # qkv + out, fc1 + fc2
    attention = 4 * D * (lengths**2).sum().item()  # q k^T and p v
    return Lyr * (linear + attention)


def onnx_runtime(hf, folder: Path):
    """An ONNX Runtime CPU session over HF's model exported by torch's dynamo exporter (dynamic batch
    and length), all graph optimisations on: ``run(ids, mask)``; or None and why when the extra is missing.
    ONNX Runtime is a benchmark-only extra: ``pip install onnxruntime onnxscript``."""
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        return None, f"onnxruntime column skipped ({e.name} is not installed: pip install onnxruntime onnxscript)"

    class Hidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hf_bert.onnx"
    ids = torch.randint(1000, 3000, (3, 16))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    dim = torch.export.Dim
    shapes = {"input_ids": {0: dim("batch"), 1: dim("length")}, "attention_mask": {0: dim("batch"), 1: dim("length")}}
    t0 = time.perf_counter()
    torch.onnx.export(Hidden(hf.eval()), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], dynamic_shapes=shapes, dynamo=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(ids, mask):
        return session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]

    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    err = (torch.from_numpy(run(ids, mask)) - ref)[mask.bool()].abs().max().item()
    if err > 1e-3:
        raise RuntimeError(f"the ONNX export disagrees with HF by {err:.2e}")
    return run, f"onnxruntime {ort.__version__}: exported in {time.perf_counter() - t0:.0f} s, max |ORT - HF| {err:.1e}"


def step_fn(model, ids, mask, backward: bool, bf16: bool):
    device = ids.device.type

    def run():
        ctx = torch.autocast(device, dtype=torch.bfloat16) if bf16 else torch.autocast(device, enabled=False)
        if backward:
            model.zero_grad(set_to_none=True)
            with ctx:
                out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            # the same scalar for both: a sum over real tokens only
            (out.float() * mask[..., None]).sum().backward()
        else:
            with torch.no_grad(), ctx:
                model(input_ids=ids, attention_mask=mask)
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def hf_config_of(name: str) -> dict:
    return dict(SIZES[name], vocab_size=30522, max_position_embeddings=512, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)


def hf_model(name: str) -> BertModel:
    """transformers' BertModel (sdpa) of this size, seeded: every call gives the same weights."""
    torch.manual_seed(0)
    hf_config = BertConfig(**hf_config_of(name))
    hf_config._attn_implementation = "sdpa"
    hf = BertModel(hf_config, add_pooling_layer=False)
    assert hf.config._attn_implementation == "sdpa"
    return hf


def bench_size(name: str, reps: int, bf16: bool, batches: dict, peak: float, device: str = "cpu",
               ort_run=None, passes: tuple[bool, ...] = (False, True), only: list[str] | None = None) -> list[dict]:
    hcfg = hf_config_of(name)
    hf = hf_model(name)
    cfg = config_from_hf({"model_type": "bert", **hcfg})
    ours = TokenEncoder(cfg)
    ours.load_state_dict(convert_state_dict(hf.state_dict(), cfg), strict=True)
    hf, ours = hf.to(device), ours.to(device)
    batches = {k: (ids.to(device), mask.to(device)) for k, (ids, mask) in batches.items()}
    impls = {"hf-sdpa": hf, **{f"tessera-{b}": ours for b in BACKENDS}}
    if onednn_available() and device == "cpu":  # the breakdown: unpadding alone, with torch's default (MKL) fp32 linear
        impls["tessera-unpadded-mkl"] = ours
    if ort_run is not None:  # forward only, always fp32 (what a CPU user would deploy instead)
        impls["onnxruntime-fp32"] = ort_run
    if only:  # hf-sdpa is every row's reference: always measured
        impls = {k: m for k, m in impls.items() if k == "hf-sdpa" or k in only}
    rows = []
    for batch_name, (ids, mask) in batches.items():
        flops = useful_flops(hcfg, mask)
        tokens = int(mask.sum())
        for backward in passes:
            cell = {k: m for k, m in impls.items() if not (backward and k == "onnxruntime-fp32")}
            times = {k: [] for k in cell}
            cpu = {k: [] for k in cell}  # this process's CPU time: what contention moves least
            for model in (hf, ours):
                model.train(backward)
            for _ in tqdm(range(reps + 1), desc=f"{name} {batch_name} {'fwd+bwd' if backward else 'fwd'}", leave=False):
                for impl, model in cell.items():  # alternate implementations inside every repetition
                    if impl.startswith("tessera-"):
                        model.set_attention_backend(impl.removeprefix("tessera-").removesuffix("-mkl"))
                    if impl == "onnxruntime-fp32":
                        run = lambda model=model, ids=ids, mask=mask: model(ids, mask)  # noqa: E731
                    else:
                        run = step_fn(model, ids, mask, backward, bf16)
                    previous = use_onednn(not impl.endswith("-mkl"))
                    t0, c0 = time.perf_counter(), time.process_time()
                    run()
                    times[impl].append(time.perf_counter() - t0)
                    cpu[impl].append(time.process_time() - c0)
                    use_onednn(previous)
            for impl, ts in times.items():
                t = statistics.median(ts[1:])  # the first repetition warms up
                total = flops * (3 if backward else 1)
                rows.append({
                    "size": name, "batch": batch_name, "pass": "fwd+bwd" if backward else "fwd", "impl": impl,
                    "dtype": "bf16-autocast" if bf16 else "fp32", "seconds": t, "tokens_per_s": tokens / t,
                    "cpu_seconds": statistics.median(cpu[impl][1:]),
                    "gflops": total / t / 1e9, "peak_fraction": total / t / 1e9 / peak,
                })
            hf_t = next(r["seconds"] for r in rows[-len(cell):] if r["impl"] == "hf-sdpa")
            hf_cpu = next(r["cpu_seconds"] for r in rows[-len(cell):] if r["impl"] == "hf-sdpa")
            ort_t = next((r["seconds"] for r in rows[-len(cell):] if r["impl"] == "onnxruntime-fp32"), None)
            for r in rows[-len(cell):]:
                r["speedup_vs_hf"] = hf_t / r["seconds"]
                r["speedup_vs_hf_cpu"] = hf_cpu / r["cpu_seconds"]  # ONNX Runtime: its thread pool spins, read its wall time
                if ort_t is not None:
                    r["speedup_vs_onnxruntime"] = ort_t / r["seconds"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per cell (median), after 1 warm-up")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--bf16", action="store_true", help="also measure under bf16 autocast")
    p.add_argument("--out", default="runs/bench", help="folder for backbone.json")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models run")
    p.add_argument("--impls", nargs="+", help="measure only these columns (e.g. tessera-unpadded onnxruntime-fp32); "
                   "hf-sdpa is always measured")
    p.add_argument("--forward-only", action="store_true", help="forward passes only (what tessera embed runs)")
    p.add_argument("--no-onnxruntime", action="store_true",
                   help="skip the ONNX Runtime column (it is skipped anyway when onnxruntime is not installed)")
    a = p.parse_args()
    torch.manual_seed(0)
    load_start = os.getloadavg()
    peaks = matmul_peak()
    peak = max(peaks.values())  # the machine's measured fp32 matmul peak: the best kernel's
    print(f"load average at start {load_start[0]:.2f} (1 min), {load_start[1]:.2f} (5 min) on {os.cpu_count()} cores")
    batches = make_batches()
    lengths = batches["ragged"][1].sum(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul 2048^3: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    print(f"ragged batch: 32 sequences, lengths {int(lengths.min())}..{int(lengths.max())}, "
          f"{int(lengths.sum())} real of {32 * int(lengths.max())} padded tokens")
    rows, notes = [], []
    for size in a.sizes:
        ort_run = None
        if not a.no_onnxruntime and a.device == "cpu":
            ort_run, note = onnx_runtime(hf_model(size), Path(a.out) / f"onnx-{size}")
            print(note)
            notes.append(note)
        for bf16 in ([False, True] if a.bf16 else [False]):
            rows += bench_size(size, a.reps, bf16, batches, peak, a.device, ort_run,
                               (False,) if a.forward_only else (False, True), a.impls)
    header = (f"{'size':7} {'dtype':13} {'batch':6} {'pass':8} {'impl':21} {'tok/s':>9} {'GFLOP/s':>8} {'%peak':>6} "
              f"{'vs HF':>6} {'(cpu)':>6} {'vs ORT':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['size']:7} {r['dtype']:13} {r['batch']:6} {r['pass']:8} {r['impl']:21} {r['tokens_per_s']:9.0f} "
              f"{r['gflops']:8.1f} {100 * r['peak_fraction']:5.0f}% {r['speedup_vs_hf']:5.2f}x {r['speedup_vs_hf_cpu']:5.2f}x"
              + (f" {r['speedup_vs_onnxruntime']:5.2f}x" if "speedup_vs_onnxruntime" in r else ""))
    peaks_end = matmul_peak()
    load_end = os.getloadavg()
    print(f"load average at end {load_end[0]:.2f} (1 min); fp32 matmul at end: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks_end.items())
          + (" -- the machine was busy: read ratios, not absolute figures" if max(load_start[0], load_end[0]) > 2.5 else ""))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
            "fp32_matmul_gflops": peaks, "fp32_matmul_gflops_end": peaks_end, "peak_gflops": peak, "reps": a.reps,
            "load_average_start": load_start, "load_average_end": load_end, "cores": os.cpu_count(),
            "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(0), "notes": notes}
    (out / "backbone.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out / 'backbone.json'}")


if __name__ == "__main__":
    main()

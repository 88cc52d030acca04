"""Text-tower embedding throughput (reports/s): an LLM2Vec encoder with LoRA adapters unmerged
(peft layers on every q/k/v/o/gate/up/down projection) vs the same adapters merged into the
weights. Same inputs (real OpenI report text, or synthetic words without the cache), outputs
checked equal; repetitions alternate merged/unmerged, the median is reported. Writes JSON.

    python scripts/bench_cxr.py --hidden 512 --layers 4 --reps 5
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from modalities.cxr import LLM2VecConfig, LLM2VecEncoder, tiny_decoder


def texts_and_tokenizer(n: int):
    from tasks.data.cxr import load_reports, report_tokenizer

    reports, _ = load_reports()
    tok, _ = report_tokenizer(reports, 4096)
    return [r.text for r in reports[:n]], tok


def batches(texts, tok, batch_size: int, max_length: int = 128):
    tok.enable_truncation(max_length)
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tok.encode_batch(texts[s : s + batch_size])
        T = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(enc), T, dtype=torch.long)
        mask = torch.zeros(len(enc), T, dtype=torch.bool)
        for r, e in enumerate(enc):
            ids[r, : len(e.ids)], mask[r, : len(e.ids)] = torch.tensor(e.ids), True
        out.append((ids, mask))
    return out


@torch.inference_mode()
def run(model, data) -> float:
    t = time.perf_counter()
    for ids, mask in data:
        model.encode(ids, mask)
    return time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--reports", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default="runs/bench/cxr_lora.json")
    a = p.parse_args(argv)
    texts, tok = texts_and_tokenizer(a.reports)
    data = batches(texts, tok, a.batch_size)
    torch.manual_seed(0)
    dec = tiny_decoder("llama", vocab_size=4096, hidden_size=a.hidden, num_layers=a.layers, num_heads=8,
                       num_kv_heads=8, intermediate_size=a.hidden * 8 // 3 // 64 * 64)
    unmerged = LLM2VecEncoder(LLM2VecConfig(decoder=dec, lora_r=16)).eval()
    with torch.no_grad():
        for n, prm in unmerged.named_parameters():
            if "lora_B" in n:
                prm.normal_(0, 0.02)
    merged = copy.deepcopy(unmerged)
    merged.merge_lora()
    ids, mask = data[0]
    with torch.inference_mode():
        diff = (unmerged.encode(ids, mask) - merged.encode(ids, mask)).abs().max().item()
    run(unmerged, data[:1]), run(merged, data[:1])  # warm-up
    times = {"unmerged": [], "merged": []}
    for _ in range(a.reps):
        times["unmerged"].append(run(unmerged, data))
        times["merged"].append(run(merged, data))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": {"hidden": a.hidden, "layers": a.layers, "lora_r": 16, "lora_alpha": 32, "targets": "q,k,v,o,gate,up,down"},
        "reports": len(texts), "batch_size": a.batch_size, "threads": torch.get_num_threads(),
        "reports_per_s": {k: round(len(texts) / v, 1) for k, v in med.items()},
        "merged_speedup": round(med["unmerged"] / med["merged"], 2),
        "max_abs_diff_merged_vs_unmerged": diff, "seconds": times,
        "note": "repetitions alternate; the machine may be shared with other jobs",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("model", "reports_per_s", "merged_speedup", "max_abs_diff_merged_vs_unmerged")}))
    return result


if __name__ == "__main__":
    main()

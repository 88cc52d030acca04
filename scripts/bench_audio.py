"""Speed of our MERT-v1 encoder against transformers' HubertModel with identical weights.

    python scripts/bench_audio.py                  # 95M, ragged batch of 4 clips of 2-5 s
    python scripts/bench_audio.py --size tiny      # a quick check
    python scripts/bench_audio.py --bf16           # ours under bf16 autocast against HF in bf16 and in fp32

Feature extraction (forward, all hidden states) and a pretraining step (forward + backward
through the same HuBERT-style head on the masked frames), alternating ours / HF within one run,
median of --reps. Throughput is seconds of real audio per second. The load average and the fp32
GEMM figure (tasks.machine.matmul_peak) are printed at start and end. Writes runs/bench/audio.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import HubertConfig, HubertModel

import modalities
from modalities.audio.heads import MERTHeads
from tasks.machine import matmul_peak


def hf_config(size: str) -> HubertConfig:
    if size == "95m":
        return HubertConfig(conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
                            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                            feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.05)
    return HubertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                        conv_dim=[64] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0,
                        mask_time_prob=0.05)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["95m", "tiny"], default="95m")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, nargs=2, default=[2.0, 5.0], help="clip length range")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("runs/bench/audio.json"))
    p.add_argument("--bf16", action="store_true",
                   help="ours under bf16 autocast; HF both in bf16 autocast and in fp32 (three-way alternation)")
    a = p.parse_args(argv)
    load_start = os.getloadavg()
    peak_start = matmul_peak(1.0)
    print(f"load average at start {load_start[0]:.2f} (1 min) on {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak_start.items()))
    torch.manual_seed(0)
    hf = HubertModel(hf_config(a.size)).eval()
    with tempfile.TemporaryDirectory() as tmp:  # through the importer, as a user would load MERT-v1
        hf.save_pretrained(tmp)
        cfg = json.loads((Path(tmp) / "config.json").read_text())
        cfg["model_type"] = "mert_model"
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        ours = modalities.load_encoder(tmp, attention_backend="unpadded").eval()
    sr = 24000
    lengths = torch.linspace(a.seconds[0] * sr, a.seconds[1] * sr, a.batch).long()
    wav = torch.randn(a.batch, int(lengths.max())) * (torch.arange(int(lengths.max())) < lengths[:, None])
    attn = (torch.arange(wav.shape[1]) < lengths[:, None]).long()
    audio_seconds = float(lengths.sum()) / sr
    D = ours.config.hidden_size
    heads = {"ours": MERTHeads(D, 8, 1024, 64), "hf": MERTHeads(D, 8, 1024, 64)}
    heads["hf"].load_state_dict(heads["ours"].state_dict())
    T = ours.config.num_frames(wav.shape[1])
    frame_mask = ours.frontend.frame_lengths(lengths)[:, None] > torch.arange(T)
    masked = torch.zeros_like(frame_mask)
    masked[:, ::2] = True
    masked &= frame_mask
    codes = torch.randint(1024, (int(masked.sum()), 8))

    names = ("ours", "hf", "hf_fp32") if a.bf16 else ("ours", "hf")
    heads["hf_fp32"] = heads["hf"]

    def precision(name):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16 and name != "hf_fp32")

    def fwd(name):
        with torch.no_grad(), precision(name):
            if name == "ours":
                ours(input_values=wav, attention_mask=attn, output_hidden_states=True)
            else:
                hf(wav, attention_mask=attn, output_hidden_states=True)

    def step(name):
        with precision(name):
            if name == "ours":
                h = ours(input_values=wav, attention_mask=attn, mask_time_indices=masked).last_hidden_state
            else:
                h = hf(wav, attention_mask=attn, mask_time_indices=masked).last_hidden_state
            loss = heads[name](h[masked], codes, None)["loss"]
        loss.backward()

    results = {}
    for job, fn in (("features", fwd), ("pretrain_step", step)):
        times = {name: [] for name in names}
        cpu = {name: [] for name in names}  # this process's CPU time: what contention moves least
        for name in names:  # warm-up
            fn(name)
        for _ in range(a.reps):
            for name in names:  # alternate: all see the same machine load
                t0, c0 = time.perf_counter(), time.process_time()
                fn(name)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        med = {k: statistics.median(v) for k, v in times.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        results[job] = {"ours_audio_s_per_s": audio_seconds / med["ours"], "hf_audio_s_per_s": audio_seconds / med["hf"],
                        "speedup": med["hf"] / med["ours"], "speedup_cpu": med_cpu["hf"] / med_cpu["ours"],
                        "seconds": times, "cpu_seconds": cpu}
        line = (f"{job:14} ours {audio_seconds / med['ours']:7.2f} audio-s/s   HF {audio_seconds / med['hf']:7.2f} "
                f"audio-s/s   speed-up {med['hf'] / med['ours']:.2f}x (CPU time {med_cpu['hf'] / med_cpu['ours']:.2f}x)")
        if a.bf16:
            results[job]["speedup_vs_hf_fp32"] = med["hf_fp32"] / med["ours"]
            results[job]["speedup_vs_hf_fp32_cpu"] = med_cpu["hf_fp32"] / med_cpu["ours"]
            line += f" (HF in bf16)   {med['hf_fp32'] / med['ours']:.2f}x HF in fp32"
        print(line)
    load_end = os.getloadavg()
    peak_end = matmul_peak(1.0)
    print(f"load average at end {load_end[0]:.2f} (1 min); " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak_end.items())
          + (" -- the machine was busy: read ratios, not absolute figures" if max(load_start[0], load_end[0]) > 2.5 else ""))
    report = {"size": a.size, "precision": "bf16 autocast" if a.bf16 else "fp32",
              "batch_seconds": lengths.div(sr).tolist(), "threads": torch.get_num_threads(),
              "reps": a.reps, "load_average_start": load_start, "load_average_end": load_end,
              "matmul_gflops_start": peak_start, "matmul_gflops_end": peak_end, "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

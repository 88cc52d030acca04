"""What the machine could do while a benchmark ran: its load average and its fp32 matmul peak.

Every benchmark under ``scripts/`` prints both at its start and its end, so that a reader sees when a run
was contended (another job on the cores lowers the matmul figure and raises the load) and reads its
ratios, not its absolute figures.
"""

from __future__ import annotations

import os
import time

import torch


def matmul_peak(seconds: float = 2.0) -> dict[str, float]:
    """fp32 GFLOP/s of a 2048^3 matmul with torch's default kernel (MKL) and, where available, oneDNN."""
    from modalities.backbone.linear import linear, onednn_available

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    kernels = {"default (MKL)": lambda: torch.nn.functional.linear(a, b)}
    if onednn_available():
        kernels["oneDNN"] = lambda: linear(a, b)
    peaks = {}
    for name, fn in kernels.items():
        for _ in range(3):
            fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        peaks[name] = 2 * 2048**3 * n / (time.perf_counter() - t0) / 1e9
    return peaks


def machine_state(when: str, seconds: float = 1.0) -> dict:
    """The load average and the matmul peak now, printed on one line (``when``: "start", "end") and returned."""
    load = [round(x, 2) for x in os.getloadavg()]
    peaks = {k: round(v, 1) for k, v in matmul_peak(seconds).items()}
    busy = " -- busy: read ratios, not absolute figures" if load[0] > 0.8 * (os.cpu_count() or 1) + 0.5 else ""
    print(f"machine at {when}: load average {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} cores; "
          "fp32 matmul 2048^3: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + busy, flush=True)
    return {"load_average": load, "fp32_matmul_gflops": peaks}

#!/usr/bin/env bash
# The GPU check, in one call, the day a GPU is lent (about 8 minutes on one card):
#   bash scripts/gpu_check.sh            (or: make gpu-check)
# 1. the gpu-marked tests (backend agreement in bf16 on CUDA, a fit step per tiny config, DDP/NCCL on 2 GPUs,
#    FSDP's encoder export gathering the full weights)
# 2. the backbone benchmark on CUDA in bf16 against transformers' BertModel (same weights, alternating)
# Everything lands in runs/gpu_check/ and one summary, runs/gpu_check.json.
# DRY_RUN=1 bash scripts/gpu_check.sh runs the same steps on the CPU (tests skip, a short CPU bench).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=runs/gpu_check
mkdir -p "$OUT"
DEVICE=cuda; BENCH_ARGS="--bf16 --reps 5"
if [ "${DRY_RUN:-0}" = 1 ]; then
  DEVICE=cpu; BENCH_ARGS="--sizes minilm --reps 1 --no-onnxruntime --impls tessera-unpadded"
else
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')" || exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null || true
start=$(date +%s)
timeout 420 $PY -m pytest -q -m gpu tests/test_gpu.py tests/test_fsdp.py --junitxml "$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
tests_rc=$?
timeout 240 $PY scripts/bench_backbone.py --device $DEVICE $BENCH_ARGS --out "$OUT" > "$OUT/bench.log" 2>&1
bench_rc=$?
$PY - "$OUT" "$tests_rc" "$bench_rc" "$start" <<'PY'
import json, sys, time
from pathlib import Path
out, tests_rc, bench_rc, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
summary = {"gpu": (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None,
           "tests_rc": tests_rc, "tests_tail": (out / "gpu_tests.log").read_text()[-2000:],
           "bench_rc": bench_rc, "seconds": round(time.time() - start)}
bench = out / "backbone.json"
if bench.exists():
    summary["backbone"] = json.loads(bench.read_text())
Path("runs/gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v for k, v in summary.items() if k != "backbone"}, indent=1))
PY
exit $(( tests_rc || bench_rc ))

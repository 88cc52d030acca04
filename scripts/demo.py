"""`make demo`: every modality's part on data that is always here, then one table across them.

Each part is its own process (``python scripts/demo_<part>.py --out DIR``) that trains its model
within a CPU budget, measures it against a named baseline and writes ``DIR/summary.json``:
    {"part", "task", "model": {"name", "value"}, "baseline": {"name", "value"},
     "higher_is_better", "seconds", "note"}
This script runs them in turn (a part that fails is reported, the others still run), writes
``runs/demo/summary.json`` and prints the table. ``--parts text recsys`` runs a subset;
``--publish`` also copies the summary to ``results/demo.json`` (the source of docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("text", "recsys", "code", "audio", "cxr")


def run_part(part: str, out: Path) -> dict:
    script = ROOT / "scripts" / f"demo_{part}.py"
    if not script.is_file():
        return {"part": part, "error": f"{script.name} is missing"}
    folder = out / part
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n=== demo part: {part} ===", flush=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(script), "--out", str(folder)], cwd=ROOT)
    seconds = round(time.time() - t0, 1)
    summary = folder / "summary.json"
    if proc.returncode != 0 or not summary.is_file():
        return {"part": part, "seconds": seconds, "error": f"exited with status {proc.returncode}; see the output above"}
    result = json.loads(summary.read_text())
    result["seconds"] = seconds  # wall time of the whole part, set-up included
    return result


def verdict(r: dict) -> str:
    if "error" in r:
        return "FAILED"
    m, b = r["model"]["value"], r["baseline"]["value"]
    better = m > b if r.get("higher_is_better", True) else m < b
    return "beats baseline" if better else "below baseline"


def table(results: list[dict]) -> str:
    head = f"{'part':7} {'task':46} {'model':>24} {'baseline':>26} {'verdict':>15} {'s':>6}"
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['part']:7} {r['error'][:46]:46} {'':>24} {'':>26} {'FAILED':>15} {r.get('seconds', 0):>6.0f}")
            continue
        m, b = r["model"], r["baseline"]
        lines.append(f"{r['part']:7} {r['task'][:46]:46} {m['name'][:14]:>14} {m['value']:>9.4g} "
                     f"{b['name'][:16]:>16} {b['value']:>9.4g} {verdict(r):>15} {r['seconds']:>6.0f}")
    notes = [f"  {r['part']}: {r['note']}" for r in results if r.get("note")]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    p.add_argument("--publish", action="store_true", help="copy the summary to results/demo.json")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = [run_part(part, out) for part in a.parts]
    summary = {"title": "make demo: each modality against its baseline on this machine's data",
               "command": "make demo", "seconds": round(time.time() - t0, 1), "parts": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n=== Tessera demo: every part against its baseline ===")
    print(table(results))
    print(f"\ntotal {summary['seconds']:.0f} s; summary: {out / 'summary.json'}")
    if a.publish:
        (ROOT / "results").mkdir(exist_ok=True)
        shutil.copy2(out / "summary.json", ROOT / "results" / "demo.json")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()

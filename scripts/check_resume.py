"""Kill a real `tessera fit` with SIGKILL and resume it with `--ckpt_path last`, for every shipped tiny config.

For each ``configs/**/*tiny*.yaml``: three processes on the config's own data (prepared into the cache on
first use), dropout as shipped, the logger on, a checkpoint after every step:

  killed    `tessera fit ... --trainer.max_steps 6`, SIGKILLed by its own callback at the end of step 4
            (the last checkpoint is step 3's: Lightning runs checkpoint callbacks after the others);
  resumed   the same command with `--ckpt_path last`, into the same run folder;
  straight  the same command, never interrupted, into another folder.

A config passes when the resumed run's last checkpoint equals the straight run's, tensor by tensor, bit for
bit, at step 6. Writes one JSON (``--out``). The in-process twin, fast enough for `make test`, is
tests/test_resume_systems.py (shrunk configs, data the test writes).

    python scripts/check_resume.py --out results/check_resume.json
    python scripts/check_resume.py --only recsys/bert4rec_tiny.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS, KILL = 6, 4


def config_for(src: Path, out: Path) -> Path:
    cfg = yaml.safe_load(src.read_text())
    trainer = cfg.setdefault("trainer", {})
    trainer.update({"max_steps": STEPS, "max_epochs": None, "check_val_every_n_epoch": None, "val_check_interval": 5,
                    "limit_val_batches": 2, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                    "enable_model_summary": False})
    trainer["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                             "init_args": {"every_n_train_steps": 1, "save_last": True}}]
    out.write_text(yaml.safe_dump(cfg))
    return out


def last_ckpt(root: Path) -> Path:
    found = sorted(root.glob("**/checkpoints/last.ckpt"))
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} last.ckpt under {root}")
    return found[0]


def check(src: Path, work: Path) -> dict:
    config = config_for(src, work / "config.yaml")
    # the crash drill's KillAt callback is the tests' own (tests/conftest.py)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}

    def fit(root: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(config),
               "--trainer.default_root_dir", str(root), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=1800)

    t0 = time.perf_counter()
    row: dict = {"config": str(src.relative_to(ROOT / "configs"))}
    killed = fit(work / "a", "--trainer.callbacks+", "conftest.KillAt", "--trainer.callbacks.step", str(KILL))
    row["killed_returncode"] = killed.returncode
    if killed.returncode != -9:
        return {**row, "ok": False, "why": "the killed run did not die by SIGKILL: " + killed.stderr[-600:]}
    row["last_step_after_kill"] = int(torch.load(last_ckpt(work / "a"), weights_only=True)["global_step"])
    resumed = fit(work / "a", "--ckpt_path", "last")
    if resumed.returncode != 0:
        return {**row, "ok": False, "why": "resume failed: " + resumed.stderr[-600:]}
    straight = fit(work / "b")
    if straight.returncode != 0:
        return {**row, "ok": False, "why": "straight run failed: " + straight.stderr[-600:]}
    a = torch.load(last_ckpt(work / "a"), weights_only=True)
    b = torch.load(last_ckpt(work / "b"), weights_only=True)
    differ = [k for k in b["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    row.update(steps=[int(a["global_step"]), int(b["global_step"])], tensors=len(b["state_dict"]),
               tensors_differing=len(differ),
               one_version=len(list((work / "a").glob("**/version_*"))) == 1,
               seconds=round(time.perf_counter() - t0, 1))
    if differ:
        row["first_differing"] = differ[:3]
    row["ok"] = not differ and a["global_step"] == b["global_step"] == STEPS and row["one_version"]
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/check_resume.json")
    p.add_argument("--only", nargs="*", help="config paths under configs/ (default: every *tiny*.yaml)")
    args = p.parse_args()
    configs = [ROOT / "configs" / c for c in args.only] if args.only else sorted((ROOT / "configs").glob("**/*tiny*.yaml"))
    rows = []
    for src in configs:
        with tempfile.TemporaryDirectory(prefix="resume-") as tmp:
            row = check(src, Path(tmp))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"title": "Resume after SIGKILL, every shipped tiny config",
               "command": "python scripts/check_resume.py --out results/check_resume.json",
               "protocol": f"a real `tessera fit` SIGKILLed at the end of step {KILL} (checkpoint every step), resumed "
                           f"with `--ckpt_path last`; its step-{STEPS} weights against an uninterrupted run's, bit for bit",
               "steps": STEPS, "killed_after_step": KILL, "load_average": os.getloadavg(),
               "passed": sum(r["ok"] for r in rows), "configs": len(rows), "rows": rows}
    out.write_text(json.dumps(summary, indent=1))
    print(f"{summary['passed']} of {len(rows)} configs resume bit for bit after SIGKILL -> {out}")
    return 0 if summary["passed"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

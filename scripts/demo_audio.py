"""`make demo`, MERT part: render labelled notes, pretrain a tiny MERT, probe pitch and family vs baselines.

1. ~1,300 one-second notes (36 pitches x 36 GM programs in 12 families) rendered from the
   TimGM6mb soundfont into the git-ignored cache (once; about 10 s);
2. `tessera fit --config configs/audio/tiny.yaml` on the training notes' audio only (no labels):
   acoustic codes by residual k-means on log-mel frames (fitted on the first batches) and an
   84-bin CQT target; span masks, in-batch noise;
3. linear and MLP probes on every layer's mean-pooled features, pitch (36 classes) and instrument
   family (12 classes), test notes from held-out programs, against log-CQT, log-mel and random weights.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from probe_audio import print_table, probe  # noqa: E402  (scripts/ is on sys.path when run as a script)
from render_notes import default_notes_dir, soundfont_path  # noqa: E402

from modalities.audio.datasets import read_notes  # noqa: E402
from modalities.audio.render import render_note_set  # noqa: E402
from tasks.cli import main as tessera  # noqa: E402


def audio_part(out: Path, steps: int = 150) -> dict:
    t0 = time.time()
    notes = default_notes_dir()
    render_note_set(soundfont_path(), notes, progress=False)  # cached after the first run
    root = out / "mert"
    tessera(["fit", "--config", str(ROOT / "configs" / "audio" / "tiny.yaml"), "--trainer.default_root_dir", str(root),
             "--data.init_args.train", str(notes / "train"), "--trainer.max_steps", str(steps),
             "--trainer.val_check_interval", str(steps), "--trainer.enable_progress_bar", "false"])
    log = max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    train_seconds = time.time() - t0
    from tasks.mert import MERTPretraining

    system = MERTPretraining.load_from_checkpoint(log / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    result = probe(system.encoder.eval(), [read_notes(notes)], log / "probe", progress=False)
    return {"job": "MERT tiny pretraining on rendered notes + linear and MLP probes", "steps": steps,
            "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.time() - t0, 1),
            "probe": result, "probe_json": str(log / "probe" / "probe.json"), "probe_plot": str(log / "probe" / "probe.png"),
            "metrics": str(log / "metrics.json")}


def print_audio(r: dict) -> None:
    n = r["probe"]["sets"]["notes"]
    print(f"MERT tiny: {r['steps']} pretraining steps on {n['train']} rendered notes, {r['wall_seconds']} s in all; "
          f"probes tested on {n['test']} notes from held-out GM programs")
    print_table(r["probe"])
    print(f"  plot: {r['probe_plot']}")


if __name__ == "__main__":
    out = ROOT / "runs" / "demo"
    print_audio(audio_part(out))

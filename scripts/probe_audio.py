"""Probe a MERT-style encoder, every layer, on labelled sets, against three baselines.

    python scripts/render_notes.py && python scripts/render_keys.py      # the sets rendered here
    python scripts/probe_audio.py --ckpt runs/audio-tiny/lightning_logs/version_0/checkpoints/last.ckpt
    python scripts/probe_audio.py --encoder path/to/MERT-v1-95M --keys    # an HF MERT-v1 or Tessera folder
    python scripts/probe_audio.py --ckpt ... --nsynth nsynth-train nsynth-test --gtzan genres [--gtzan-splits dir]

As MARBLE: frozen features from every layer, mean-pooled over each clip's frames, a linear probe
(softmax regression, L-BFGS) and an MLP probe (one hidden layer of ``--mlp`` units) per layer and
task. Baselines on the same splits: log-CQT and log-mel features (mean over time), and the same
architecture with random weights. Sets: rendered GM notes (pitch, family; test = held-out GM
programs), rendered music21 pieces (key; test = held-out pieces), NSynth, GTZAN.
Writes probe.json and probe.png into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import modalities  # noqa: E402
from modalities.audio import AudioEncoder  # noqa: E402
from modalities.audio.datasets import (  # noqa: E402
    ProbeSet,
    load_clips,
    read_gtzan,
    read_keys,
    read_notes,
    read_nsynth,
)
from modalities.audio.probe import layer_features, linear_probe, spectral_features  # noqa: E402


def load_any(ckpt: str | None, folder: str | None) -> AudioEncoder:
    if folder:
        return modalities.load_encoder(folder)
    from tasks.mert import MERTPretraining

    return MERTPretraining.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False).encoder.eval()


def compare(feats: dict, split: torch.Tensor, y: torch.Tensor, hidden: int, seed: int) -> dict:
    """Test accuracy of one probe kind on every layer of the model and of the random model, and on
    the two spectral baselines; best layers and whether the model's best beats every baseline."""
    def acc(x):
        return linear_probe(x[split], y[split], x[~split], y[~split], hidden=hidden, seed=seed)

    r = {"model": [acc(feats["model"][:, i]) for i in range(feats["model"].shape[1])],
         "random": [acc(feats["random"][:, i]) for i in range(feats["random"].shape[1])],
         "cqt": acc(feats["cqt"]), "mel": acc(feats["mel"])}
    r["model_best"], r["model_best_layer"] = max(r["model"]), r["model"].index(max(r["model"]))
    r["random_best"] = max(r["random"])
    r["beats_all_baselines"] = r["model_best"] > max(r["cqt"], r["mel"], r["random_best"])
    return r


def probe(encoder: AudioEncoder, sets: list[ProbeSet], out: Path, cqt_bins: int = 84, mlp: int = 512,
          seed: int = 0, max_seconds: float | None = None, progress: bool = True) -> dict:
    """Every set's tasks, linear (and MLP unless ``mlp`` is 0) probes; writes probe.json and probe.png."""
    t0 = time.time()
    sr = encoder.config.sample_rate
    torch.manual_seed(seed)
    random_encoder = AudioEncoder(encoder.config).eval()  # same architecture, random weights
    result = {"cqt_bins": cqt_bins, "mlp_hidden": mlp, "sets": {}}
    for ps in sets:
        clips, split, labels, stats = load_clips(ps, sr, max_seconds, progress)
        feats = {
            "model": layer_features(encoder, clips, progress=progress),  # (N, L + 1, D)
            "random": layer_features(random_encoder, clips, progress=progress),
            "cqt": spectral_features(clips, "cqt", sr, cqt_bins=cqt_bins, cqt_bins_per_octave=12 * cqt_bins // 84),
            "mel": spectral_features(clips, "mel", sr),
        }
        r = {"clips": len(clips), "train": int(split.sum()), "test": int((~split).sum()),
             "skipped": dict(stats.skipped), "tasks": {}}
        for task, y in labels.items():
            t = {"classes": len(ps.classes.get(task, ())) or int(y.max()) + 1,
                 "test_classes": int(y[~split].unique().numel()),
                 "majority": float((y[~split] == y[split].mode().values).float().mean()),
                 "linear": compare(feats, split, y, 0, seed)}
            if mlp:
                t["mlp"] = compare(feats, split, y, mlp, seed)
            r["tasks"][task] = t
        result["sets"][ps.name] = r
    result["seconds"] = round(time.time() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "probe.png")
    return result


def plot(result: dict, path: Path) -> None:
    panels = [(s, task, kind, r[kind]) for s, sr in result["sets"].items() for task, r in sr["tasks"].items()
              for kind in ("linear", "mlp") if kind in r]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (s, task, kind, r) in zip(axes[0], panels, strict=True):
        layers = range(len(r["model"]))
        ax.plot(layers, r["model"], "o-", label="pretrained")
        ax.plot(layers, r["random"], "s--", label="random weights")
        ax.axhline(r["cqt"], color="C2", ls=":", label=f"log-CQT ({result['cqt_bins']} bins)")
        ax.axhline(r["mel"], color="C3", ls=":", label="log-mel")
        ax.set(title=f"{s}: {task}, {kind} probe", xlabel="layer", ylabel="test accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(result: dict) -> None:
    print(f"  {'set':6} {'task':7} {'probe':6} {'best layer':>12} {'random wts':>10} {'log-CQT':>8} {'log-mel':>8}  beats all")
    for s, sr in result["sets"].items():
        for task, t in sr["tasks"].items():
            for kind in ("linear", "mlp"):
                if kind in t:
                    r = t[kind]
                    print(f"  {s:6} {task:7} {kind:6} {r['model_best']:>6.3f} (L{r['model_best_layer']:<2}) "
                          f"{r['random_best']:>10.3f} {r['cqt']:>8.3f} {r['mel']:>8.3f}  "
                          f"{'yes' if r['beats_all_baselines'] else 'no'}")


def main(argv=None) -> dict:
    from render_keys import default_keys_dir
    from render_notes import default_notes_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a MERTPretraining Lightning checkpoint")
    src.add_argument("--encoder", help="a Tessera or HF MERT-v1/HuBERT folder")
    p.add_argument("--notes", type=Path, nargs="?", const=default_notes_dir(), default=None,
                   help="rendered note set (default when no set is named: the cache's)")
    p.add_argument("--keys", type=Path, nargs="?", const=default_keys_dir(), default=None,
                   help="rendered key set (scripts/render_keys.py; bare flag: the cache's)")
    p.add_argument("--nsynth", type=Path, nargs=2, metavar=("TRAIN", "TEST"), help="NSynth split folders")
    p.add_argument("--gtzan", type=Path, help="GTZAN genres folder")
    p.add_argument("--gtzan-splits", type=Path, help="folder with train_filtered.txt / test_filtered.txt")
    p.add_argument("--max-seconds", type=float, default=None, help="read at most this much of each file")
    p.add_argument("--out", type=Path, default=Path("runs/probe"))
    p.add_argument("--cqt-bins", type=int, default=84, help="84 (12/octave) or 336 (48/octave, MERT's; slow on CPU)")
    p.add_argument("--mlp", type=int, default=512, help="hidden width of the MLP probe (0: linear only)")
    a = p.parse_args(argv)
    sets = []
    if a.notes is not None or not (a.keys or a.nsynth or a.gtzan):
        sets.append(read_notes(a.notes or default_notes_dir()))
    if a.keys is not None:
        sets.append(read_keys(a.keys))
    if a.nsynth:
        sets.append(read_nsynth(*a.nsynth))
    if a.gtzan:
        sets.append(read_gtzan(a.gtzan, a.gtzan_splits))
    result = probe(load_any(a.ckpt, a.encoder), sets, a.out, a.cqt_bins, a.mlp, max_seconds=a.max_seconds)
    print_table(result)
    print(f"wrote {a.out / 'probe.json'} and {a.out / 'probe.png'}")
    return result


if __name__ == "__main__":
    main()

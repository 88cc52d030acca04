"""Probe a MERT-style encoder on the rendered note set: pitch and instrument family, every layer.

    python scripts/render_notes.py
    python scripts/probe_audio.py --ckpt runs/audio-tiny/lightning_logs/version_0/checkpoints/last.ckpt
    python scripts/probe_audio.py --encoder path/to/MERT-v1-95M      # an HF MERT-v1 or Tessera folder

Frozen features from every layer, mean-pooled over each note's frames, a linear probe
(softmax regression, L-BFGS) per layer; baselines on the same split: log-CQT and log-mel
features, and the same architecture with random weights. Test notes come from GM programs the
probe never saw. Writes probe.json and probe.png into --out.
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
from modalities.audio.io import load_audio  # noqa: E402
from modalities.audio.probe import layer_features, linear_probe, spectral_features  # noqa: E402
from modalities.audio.render import read_note_set  # noqa: E402

TASKS = ("pitch", "family")


def load_any(ckpt: str | None, folder: str | None) -> AudioEncoder:
    if folder:
        return modalities.load_encoder(folder)
    from tasks.mert import MERTPretraining

    return MERTPretraining.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False).encoder.eval()


def probe(encoder: AudioEncoder, notes_dir: Path, out: Path, cqt_bins: int = 84, hidden: int = 0,
          seed: int = 0, progress: bool = True) -> dict:
    t0 = time.time()
    notes = read_note_set(notes_dir)
    sr = encoder.config.sample_rate
    clips = [torch.from_numpy(load_audio(notes_dir / n.file, sr)) for n in notes]
    split = torch.tensor([n.split == "train" for n in notes])
    labels = {"pitch": torch.tensor([n.pitch for n in notes]), "family": torch.tensor([n.family for n in notes])}
    labels["pitch"] -= labels["pitch"].min()
    torch.manual_seed(seed)
    random_encoder = AudioEncoder(encoder.config).eval()  # same architecture, random weights
    feats = {
        "model": layer_features(encoder, clips, progress=progress),  # (N, L + 1, D)
        "random": layer_features(random_encoder, clips, progress=progress),
        "cqt": spectral_features(clips, "cqt", sr, cqt_bins=cqt_bins, cqt_bins_per_octave=12 * cqt_bins // 84),
        "mel": spectral_features(clips, "mel", sr),
    }

    def acc(x, y):
        return linear_probe(x[split], y[split], x[~split], y[~split], hidden=hidden, seed=seed)

    result = {"notes": len(notes), "train": int(split.sum()), "test": int((~split).sum()),
              "probe": "mlp" if hidden else "linear", "cqt_bins": cqt_bins, "tasks": {}}
    for task in TASKS:
        y = labels[task]
        r = {
            "classes": int(y.max()) + 1,
            "model": [acc(feats["model"][:, i], y) for i in range(feats["model"].shape[1])],
            "random": [acc(feats["random"][:, i], y) for i in range(feats["random"].shape[1])],
            "cqt": acc(feats["cqt"], y),
            "mel": acc(feats["mel"], y),
        }
        r["model_best"], r["model_best_layer"] = max(r["model"]), r["model"].index(max(r["model"]))
        r["random_best"] = max(r["random"])
        r["beats_all_baselines"] = r["model_best"] > max(r["cqt"], r["mel"], r["random_best"])
        result["tasks"][task] = r
    result["seconds"] = round(time.time() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "probe.png")
    return result


def plot(result: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(result["tasks"]), figsize=(5 * len(result["tasks"]), 3.6))
    for ax, (task, r) in zip(axes, result["tasks"].items(), strict=True):
        layers = range(len(r["model"]))
        ax.plot(layers, r["model"], "o-", label="pretrained")
        ax.plot(layers, r["random"], "s--", label="random weights")
        ax.axhline(r["cqt"], color="C2", ls=":", label=f"CQT ({result['cqt_bins']} bins)")
        ax.axhline(r["mel"], color="C3", ls=":", label="log-mel")
        ax.set(title=f"{task} ({r['classes']} classes, held-out programs)", xlabel="layer", ylabel="test accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict) -> None:
    print(f"probe ({result['probe']}), {result['train']} train / {result['test']} test notes")
    print(f"  {'task':8} {'best layer':>14} {'random best':>12} {'CQT':>7} {'mel':>7}")
    for task, r in result["tasks"].items():
        print(f"  {task:8} {r['model_best']:>8.3f} (L{r['model_best_layer']:<2}) {r['random_best']:>12.3f} "
              f"{r['cqt']:>7.3f} {r['mel']:>7.3f}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a MERTPretraining Lightning checkpoint")
    src.add_argument("--encoder", help="a Tessera or HF MERT-v1/HuBERT folder")
    p.add_argument("--notes", type=Path, default=None, help="rendered note set (default: the cache)")
    p.add_argument("--out", type=Path, default=Path("runs/probe"))
    p.add_argument("--cqt-bins", type=int, default=84, help="84 (12/octave) or 336 (48/octave, MERT's; slow on CPU)")
    p.add_argument("--mlp", type=int, default=0, help="hidden width of an MLP probe (0: linear)")
    a = p.parse_args(argv)
    if a.notes is None:
        from render_notes import default_notes_dir

        a.notes = default_notes_dir()
    result = probe(load_any(a.ckpt, a.encoder), a.notes, a.out, a.cqt_bins, a.mlp)
    print_table(result)
    print(f"wrote {a.out / 'probe.json'} and {a.out / 'probe.png'}")
    return result


if __name__ == "__main__":
    main()

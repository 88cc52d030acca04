"""``tessera eval audio-probe``: an audio encoder, every layer, probed on labelled sets against baselines.

    tessera eval audio-probe --encoder runs/audio-tiny/lightning_logs/version_0/encoder
    tessera eval audio-probe --encoder runs/mert-v1-95m --keys          # a `tessera import`ed MERT-v1
    tessera eval audio-probe --encoder ... --nsynth nsynth-train nsynth-test --gtzan genres [--gtzan-splits dir]

As MARBLE: frozen features from every layer, mean-pooled over each clip's frames, a linear probe
(softmax regression, L-BFGS) and an MLP probe (one hidden layer of ``--mlp`` units) per layer and
task. Baselines on the same splits: log-CQT and log-mel features (mean over time), and the same
architecture with random weights. Sets: rendered GM notes (pitch, family; test = held-out GM
programs), rendered music21 pieces (key; test = held-out pieces), NSynth, GTZAN. The rendered sets
are built into the cache on first use. Writes probe.json and probe.png into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..jobs import UserError, job


def load_audio_encoder(path: str | Path, option: str = "--encoder"):
    """An audio encoder from an encoder folder (``tessera fit``'s <log dir>/encoder, ``tessera export``,
    or an imported / HF MERT-v1 folder); a folder of another modality is an error naming it."""
    import modalities
    from modalities.audio import AudioEncoder

    from ..embed import guess_modality, open_encoder_folder

    folder, raw = open_encoder_folder(path)
    modality = guess_modality(folder, raw)
    if modality != "audio":
        raise UserError(f"{option} {folder} is a {modality} encoder folder, not an audio one; give the encoder/ "
                        "folder of an audio run, or a MERT-v1 folder (`tessera import` one)")
    encoder = modalities.load_encoder(folder)
    if not isinstance(encoder, AudioEncoder):
        raise UserError(f"{option} {folder} holds a {type(encoder).__name__}, not an AudioEncoder")
    return encoder


def compare(feats: dict, split, y, hidden: int, seed: int) -> dict:
    """Test accuracy of one probe kind on every layer of the model and of the random model, and on
    the two spectral baselines; best layers and whether the model's best beats every baseline."""
    from modalities.audio.probe import linear_probe

    def acc(x):
        return linear_probe(x[split], y[split], x[~split], y[~split], hidden=hidden, seed=seed)

    r = {"model": [acc(feats["model"][:, i]) for i in range(feats["model"].shape[1])],
         "random": [acc(feats["random"][:, i]) for i in range(feats["random"].shape[1])],
         "cqt": acc(feats["cqt"]), "mel": acc(feats["mel"])}
    r["model_best"], r["model_best_layer"] = max(r["model"]), r["model"].index(max(r["model"]))
    r["random_best"] = max(r["random"])
    r["beats_all_baselines"] = r["model_best"] > max(r["cqt"], r["mel"], r["random_best"])
    return r


def probe(encoder, sets: list, out: Path, cqt_bins: int = 84, mlp: int = 512, seed: int = 0,
          max_seconds: float | None = None, progress: bool = True) -> dict:
    """Every set's tasks, linear (and MLP unless ``mlp`` is 0) probes; writes probe.json and probe.png."""
    import torch

    from modalities.audio import AudioEncoder
    from modalities.audio.datasets import load_clips
    from modalities.audio.probe import layer_features, spectral_features

    t0 = time.time()
    sr = encoder.config.sample_rate
    torch.manual_seed(seed)
    random_encoder = AudioEncoder(encoder.config).eval()  # same architecture, random weights
    result = {"cqt_bins": cqt_bins, "mlp_hidden": mlp, "sets": {}}
    for ps in sets:
        clips, split, labels, stats = load_clips(ps, sr, max_seconds, progress)
        if stats.skipped:
            print(f"{ps.name}: {stats}")
        if not bool(split.any()) or bool(split.all()):
            raise UserError(f"probe set {ps.name}: after skipping unreadable files ({stats}) it has "
                            f"{int(split.sum())} train / {int((~split).sum())} test clips; both are needed")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _rendered_set(given: Path | None, default: Path, read, option: str, prepare):
    """A rendered set: the default one is built on first use; a user's folder must hold labels.json."""
    folder = Path(given).expanduser() if given is not None else default
    if given is None or folder.resolve() == default.resolve():
        from ..prepare.audio import set_ready

        if not set_ready(default):
            prepare(default)
    elif not folder.exists():
        raise UserError(f"{option} {folder} does not exist; give a rendered set's folder (omit the value for the "
                        "cache's, which is rendered on first use)")
    elif not (folder / "labels.json").is_file():
        raise UserError(f"{option} {folder} holds no labels.json; it is not a rendered set "
                        f"(`tessera prepare {'audio-notes' if 'notes' in option else 'audio-keys'} --out {folder}`)")
    try:
        return read(folder)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise UserError(f"{option} {folder}: labels.json is not a rendered set's ({type(e).__name__}); "
                        "render it again") from None


@job("eval", "audio-probe", help="probe every layer of an audio encoder (pitch, family, key, genre) vs baselines",
     example="tessera eval audio-probe --encoder runs/audio-tiny/lightning_logs/version_0/encoder --out runs/probe")
def audio_probe(args: argparse.Namespace) -> int:
    """Frozen features from every layer, mean-pooled per clip; linear and MLP probes per layer and
    task against log-CQT, log-mel and the same architecture with random weights. With no set named,
    the rendered note set (built into the cache on first use). Writes probe.json and probe.png."""
    from modalities.audio.datasets import read_gtzan, read_keys, read_notes, read_nsynth

    from ..prepare.audio import default_keys_dir, default_notes_dir, prepare_keys, prepare_notes

    encoder = load_audio_encoder(args.encoder)
    sets = []
    if args.notes is not None or not (args.keys is not None or args.nsynth or args.gtzan):
        given = None if args.notes in (None, "") else args.notes
        sets.append(_rendered_set(given, default_notes_dir(), read_notes, "--notes",
                                  lambda d: prepare_notes(d, progress=not args.quiet)))
    if args.keys is not None:
        given = None if args.keys == "" else args.keys
        sets.append(_rendered_set(given, default_keys_dir(), read_keys, "--keys",
                                  lambda d: prepare_keys(d, progress=not args.quiet)))
    if args.nsynth:
        sets.append(read_nsynth(*args.nsynth))
    if args.gtzan:
        sets.append(read_gtzan(args.gtzan, args.gtzan_splits))
    out = Path(args.out)
    result = probe(encoder, sets, out, args.cqt_bins, args.mlp, seed=args.seed, max_seconds=args.max_seconds,
                   progress=not args.quiet)
    print_table(result)
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")
    return 0


@audio_probe.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", required=True,
                   help="an audio encoder folder (<log dir>/encoder of an audio run, or a MERT-v1 folder)")
    p.add_argument("--notes", nargs="?", const="", default=None,
                   help="rendered note set folder (bare flag or no set named: the cache's, rendered on first use)")
    p.add_argument("--keys", nargs="?", const="", default=None,
                   help="rendered key set folder (bare flag: the cache's, rendered on first use; needs music21)")
    p.add_argument("--nsynth", nargs=2, metavar=("TRAIN", "TEST"), help="NSynth split folders")
    p.add_argument("--gtzan", help="GTZAN genres folder")
    p.add_argument("--gtzan-splits", help="folder with train_filtered.txt / test_filtered.txt")
    p.add_argument("--max-seconds", type=float, default=None, help="read at most this much of each file")
    p.add_argument("--out", default="runs/probe", help="folder for probe.json and probe.png")
    p.add_argument("--cqt-bins", type=int, default=84, help="84 (12/octave) or 336 (48/octave, MERT's; slow on CPU)")
    p.add_argument("--mlp", type=int, default=512, help="hidden width of the MLP probe (0: linear only)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random-weights baseline and the probes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

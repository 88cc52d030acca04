"""``tessera eval audio-probe``: an audio encoder, every layer, probed on a public music benchmark with
MARBLE's protocol, or on the offline demo's rendered sets against baselines.

    tessera eval audio-probe --encoder runs/mert-v1-95m --task gtzan --data data/GTZAN
    tessera eval audio-probe --encoder runs/mert-v1-95m --task mtt --data data/MTT --max-seconds 30
    tessera eval audio-probe --encoder runs/audio-tiny/lightning_logs/version_0/encoder   # rendered notes
    tessera eval audio-probe --encoder runs/mert-v1-95m --keys                            # + rendered Bach keys

``--task`` (nsynth-pitch, nsynth-instrument, gtzan, giantsteps-key, mtt, emomusic) reads the data set's
public files (``modalities/audio/benchmarks.py``), mean-pools every layer's frozen features per clip,
and for each layer fits MARBLE's probe (an MLP of 512, dropout 0.2, Adam, early stopping) at every
learning rate (and weight decay) of the grid, picks the best on the validation split, and scores it
once on test. The layer with the best validation score gives the headline.

With no ``--task``: rendered GM notes (pitch, family; test = held-out GM programs) and rendered music21
pieces (key; test = held-out pieces), built into the cache on first use; a linear probe (softmax
regression, L-BFGS) and an MLP probe per layer against log-CQT, log-mel and the same architecture with
random weights. Either way: probe.json and probe.png in --out.
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
          max_seconds: float | None = None, progress: bool = True, pool: str = "mean") -> dict:
    """Every set's tasks, linear (and MLP unless ``mlp`` is 0) probes; writes probe.json and probe.png.
    ``pool``: how every feature (model, random weights, log-CQT, log-mel) is pooled over a clip's frames."""
    import torch

    from modalities.audio import AudioEncoder
    from modalities.audio.datasets import load_clips
    from modalities.audio.probe import layer_features, spectral_features

    t0 = time.time()
    sr = encoder.config.sample_rate
    torch.manual_seed(seed)
    random_encoder = AudioEncoder(encoder.config).eval()  # same architecture, random weights
    result = {"cqt_bins": cqt_bins, "mlp_hidden": mlp, "pool": pool, "sets": {}}
    for ps in sets:
        clips, split, labels, stats = load_clips(ps, sr, max_seconds, progress)
        if stats.skipped:
            print(f"{ps.name}: {stats}")
        n_split = {"train": sum(ps.train), "test": len(ps.train) - sum(ps.train)}
        dead = [name for name, ok in (("train", bool(split.any())), ("test", not bool(split.all()))) if not ok]
        if dead:
            where = next((Path(f).parent for f, t in zip(ps.files, ps.train, strict=True) if t == (dead[0] == "train")), "")
            raise UserError(f"probe set {ps.name}: none of its {' / '.join(f'{n_split[d]} {d}' for d in dead)} files "
                            f"decodes ({stats}; e.g. {where}); render the set again or give another folder")
        feats = {
            "model": layer_features(encoder, clips, progress=progress, pool=pool),  # (N, L + 1, D or 2D)
            "random": layer_features(random_encoder, clips, progress=progress, pool=pool),
            "cqt": spectral_features(clips, "cqt", sr, cqt_bins=cqt_bins, cqt_bins_per_octave=12 * cqt_bins // 84,
                                     pool=pool),
            "mel": spectral_features(clips, "mel", sr, pool=pool),
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
    print(f"  features pooled over each clip's frames by: {result.get('pool', 'mean')}")
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


TASKS = ("nsynth-pitch", "nsynth-instrument", "gtzan", "giantsteps-key", "mtt", "emomusic")


def benchmark_probe(encoder, task: str, data: str | Path, out: Path, cfg, max_seconds: float | None = None,
                    batch_size: int = 4, limit: int | None = None, layers: list[int] | None = None,
                    baselines: bool = False, progress: bool = True) -> dict:
    """MARBLE's protocol on one public benchmark: read, decode (bad files counted), features of every
    layer, a probe per layer with hyperparameters chosen on valid, test once. With ``baselines``, the
    same protocol on the same architecture with random weights (every layer) and on log-mel features.
    Writes probe.json / .png."""
    import random

    from modalities.audio.benchmarks import read_benchmark
    from modalities.audio.datasets import stream_features
    from modalities.audio.metrics import task_metrics
    from modalities.audio.probe import layer_features, probe_layers, spectral_features

    t0 = time.time()
    bm = read_benchmark(task, data)
    picked = list(range(len(bm.files)))
    if limit:  # a seeded sample of each split: quicker, and no longer comparable with published figures
        rng = random.Random(cfg.seed)
        picked = sorted(i for s in ("train", "valid", "test")
                        for i in rng.sample([j for j, t in enumerate(bm.split) if t == s],
                                            min(limit, bm.split.count(s))))
    if bm.stats.skipped:
        print(f"{task}: {bm.stats}")
    sr = encoder.config.sample_rate
    extract = {"model": lambda clips: layer_features(encoder, clips, batch_size=batch_size)}  # (n, L + 1, D)
    if baselines:
        import torch

        from modalities.audio import AudioEncoder

        torch.manual_seed(cfg.seed)
        rand = AudioEncoder(encoder.config).to(next(encoder.parameters()).device).eval()  # random weights
        extract["random_weights"] = lambda clips: layer_features(rand, clips, batch_size=batch_size)
        extract["log_mel"] = lambda clips: spectral_features(clips, "mel", sr)[:, None]  # (n, 1, 128)
    seconds = bm.clip_seconds if max_seconds is None else min(max_seconds, bm.clip_seconds or max_seconds)
    feats, keep, audio = stream_features([bm.files[i] for i in picked], extract, sr, seconds,
                                         chunk=max(batch_size, 32), progress=progress, desc=f"features of {task}",
                                         offsets=[bm.offsets[i] for i in picked] if bm.offsets else None)
    if audio.skipped:
        print(f"{task} audio: {audio}")
    keep = [picked[i] for i in keep]
    split = [bm.split[i] for i in keep]
    y = bm.targets[keep]
    groups = [bm.groups[i] for i in keep] if bm.groups is not None else None
    counts = {s: split.count(s) for s in ("train", "valid", "test")}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise UserError(f"--data {data}: no usable {'/'.join(empty)} clips for {task} (metadata: {bm.stats}; "
                        f"audio: {audio}); it needs train, valid and test")
    n_layers = feats["model"].shape[1]
    if layers is not None and any(not 0 <= i < n_layers for i in layers):
        raise UserError(f"--probe-layers {','.join(map(str, layers))}: this encoder has layers 0..{n_layers - 1} "
                        "(0: the frontend)")
    rows = {s: [i for i, t in enumerate(split) if t == s] for s in counts}

    def score(outputs, which):
        r = rows[which]
        return task_metrics(bm.kind, outputs, y[r], [groups[i] for i in r] if groups else None,
                            keys=task == "giantsteps-key", names=bm.classes)

    device = next(encoder.parameters()).device
    n_out = len(bm.classes)
    probe = probe_layers(feats["model"], split, y, bm.kind, score, bm.metric, cfg, layers, device, n_out, progress)
    if baselines:
        probe["baselines"] = {}
        for name in ("random_weights", "log_mel"):
            b = probe_layers(feats[name], split, y, bm.kind, score, bm.metric, cfg, None, device, n_out, progress)
            probe["baselines"][name] = {k: b[k] for k in ("best_layer", "valid", "test")}
    result = {"task": task, "data": str(data), "kind": bm.kind, "metric": bm.metric, "source": bm.source,
              "classes": len(bm.classes), "clips": counts, "limit_per_split": limit,
              "skipped": {"records": dict(bm.stats.skipped), "audio": dict(audio.skipped)},
              "max_seconds": max_seconds, **probe, "seconds": round(time.time() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2))
    plot_benchmark(result, out / "probe.png")
    return result


def plot_benchmark(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["metric"]
    layers = [r["layer"] for r in result["layers"]]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(layers, [r["valid"] for r in result["layers"]], "s--", label=f"valid {m} (chooses lr and layer)")
    ax.plot(layers, [r["test"][m] for r in result["layers"]], "o-", label=f"test {m}")
    ax.axvline(result["best_layer"], color="0.6", ls=":", label=f"best on valid: L{result['best_layer']}")
    for k, (name, b) in enumerate(result.get("baselines", {}).items()):
        ax.axhline(b["test"][m], color=f"C{k + 2}", ls="-.", label=f"{name.replace('_', ' ')} (test)")
    ax.set(title=f"{result['task']}: MARBLE probe per layer", xlabel="layer", ylabel=m, xticks=layers)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_benchmark(result: dict) -> None:
    m = result["metric"]
    print(f"  {result['task']} ({result['kind']}, {result['clips']['train']} train / {result['clips']['valid']} valid / "
          f"{result['clips']['test']} test clips); hyperparameters and layer chosen on valid {m}")
    print(f"  {'layer':>5} {'lr':>8} {'wd':>7} {'epoch':>5} {'valid':>7}  test")
    for r in result["layers"]:
        test = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r["test"].items())
        mark = " *" if r["layer"] == result["best_layer"] else ""
        print(f"  {r['layer']:>5} {r['lr']:>8.0e} {r['weight_decay']:>7.0e} {r['best_epoch']:>5} {r['valid']:>7.3f}  {test}{mark}")
    for name, b in result.get("baselines", {}).items():
        print(f"  baseline {name.replace('_', ' ')}: valid {b['valid']:.3f}, test {m} {b['test'][m]:.3f} (layer {b['best_layer']})")
    skipped = {k: v for k, v in result["skipped"].items() if v}
    if skipped:
        print(f"  skipped: {skipped}")


@job("eval", "audio-probe", help="probe every layer of an audio encoder on a music benchmark (MARBLE protocol) "
     "or the rendered demo sets", example="tessera eval audio-probe --encoder runs/mert-v1-95m --task gtzan --data data/GTZAN")
def audio_probe(args: argparse.Namespace) -> int:
    """With --task: MARBLE's protocol on a public benchmark (probe per layer, hyperparameters chosen on
    valid, test once). Without: linear and MLP probes per layer on the rendered sets against log-CQT,
    log-mel and the same architecture with random weights. Writes probe.json and probe.png."""
    from modalities.audio.datasets import read_keys, read_notes

    from ..prepare.audio import default_keys_dir, default_notes_dir, prepare_keys, prepare_notes

    if args.task is not None:
        return _benchmark_job(args)
    if args.data is not None:
        raise UserError(f"--data {args.data} needs --task (one of {', '.join(TASKS)})")
    encoder = load_audio_encoder(args.encoder)
    sets = []
    if args.notes is not None or args.keys is None:
        given = None if args.notes in (None, "") else args.notes
        sets.append(_rendered_set(given, default_notes_dir(), read_notes, "--notes",
                                  lambda d: prepare_notes(d, progress=not args.quiet)))
    if args.keys is not None:
        given = None if args.keys == "" else args.keys
        sets.append(_rendered_set(given, default_keys_dir(), read_keys, "--keys",
                                  lambda d: prepare_keys(d, progress=not args.quiet)))
    out = Path(args.out)
    result = probe(encoder, sets, out, args.cqt_bins, args.mlp, seed=args.seed, max_seconds=args.max_seconds,
                   progress=not args.quiet, pool=args.pool)
    print_table(result)
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")
    return 0


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} {text!r}: give comma-separated numbers, e.g. 1e-3,1e-4") from None
    if not vals or any(v < 0 for v in vals):
        raise UserError(f"{option} {text!r}: give one or more non-negative numbers")
    return vals


def _benchmark_job(args: argparse.Namespace) -> int:
    import torch

    from modalities.audio.probe import ProbeConfig

    if args.notes is not None or args.keys is not None:
        raise UserError("--task probes one benchmark; drop --notes / --keys (run them without --task)")
    if args.data is None:
        raise UserError(f"--task {args.task} needs --data PATH, the data set's folder (docs/audio.md lists each layout)")
    if not Path(args.data).expanduser().is_dir():
        raise UserError(f"--data {args.data} is not a folder: give the {args.task} data folder (docs/audio.md lists each layout)")
    for option, value, low in (("--hidden", args.hidden, 0), ("--epochs", args.epochs, 1), ("--patience", args.patience, 1),
                               ("--batch-size", args.batch_size, 1), ("--limit", args.limit, 1)):
        if value is not None and value < low:
            raise UserError(f"{option} {value}: give a whole number of at least {low}")
    cfg = ProbeConfig(lrs=_floats(args.lr, "--lr"), weight_decays=_floats(args.weight_decay, "--weight-decay"),
                      hidden=args.hidden, epochs=args.epochs or (50 if args.task.startswith("nsynth") else 100),
                      patience=args.patience, seed=args.seed)
    encoder = load_audio_encoder(args.encoder)
    if args.device:
        try:
            encoder = encoder.to(torch.device(args.device))
        except (RuntimeError, AssertionError, ValueError) as e:
            raise UserError(f"--device {args.device}: {str(e).splitlines()[0]}") from None
    out = Path(args.out)
    layers = None
    if args.probe_layers is not None:
        try:
            layers = sorted({int(v) for v in args.probe_layers.split(",") if v.strip()})
        except ValueError:
            raise UserError(f"--probe-layers {args.probe_layers!r}: give layer numbers, e.g. 6,7,8") from None
        if not layers:
            raise UserError(f"--probe-layers {args.probe_layers!r}: give layer numbers, e.g. 6,7,8")
    result = benchmark_probe(encoder, args.task, args.data, out, cfg, args.max_seconds, args.batch_size,
                             args.limit, layers, args.baselines, progress=not args.quiet)
    print_benchmark(result)
    best = next(r for r in result["layers"] if r["layer"] == result["best_layer"])
    print(f"{args.task}: best layer on valid L{result['best_layer']} (lr {best['lr']:g}); "
          f"test {result['metric']} {result['test'][result['metric']]:.4f}")
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
    p.add_argument("--task", choices=TASKS, help="a public benchmark probed with MARBLE's protocol (needs --data)")
    p.add_argument("--data", help="the benchmark's folder as downloaded (layouts: docs/audio.md)")
    p.add_argument("--lr", default="1e-2,5e-3,1e-3,5e-4,1e-4", help="--task: learning rates searched on valid (MARBLE's)")
    p.add_argument("--weight-decay", default="0", help="--task: weight decays searched on valid (MARBLE: 0)")
    p.add_argument("--hidden", type=int, default=512, help="--task: probe hidden units (MARBLE: 512; 0: linear)")
    p.add_argument("--epochs", type=int, default=None, help="--task: max epochs (MARBLE: 100, NSynth 50)")
    p.add_argument("--patience", type=int, default=20, help="--task: early-stopping patience in epochs (MARBLE: 20)")
    p.add_argument("--batch-size", type=int, default=4, help="--task: clips per feature-extraction batch")
    p.add_argument("--limit", type=int, default=None,
                   help="--task: a seeded sample of at most N clips per split (quick look; not comparable)")
    p.add_argument("--baselines", action="store_true",
                   help="--task: also probe the same architecture with random weights and log-mel features")
    p.add_argument("--probe-layers", default=None,
                   help="--task: probe only these layers, e.g. 7 or 6,7,8 (default: every layer; 0 is the frontend)")
    p.add_argument("--device", default=None, help="--task: run the encoder and the probes on this torch device (e.g. cuda)")
    p.add_argument("--max-seconds", type=float, default=None, help="read at most this much of each file")
    p.add_argument("--out", default="runs/probe", help="folder for probe.json and probe.png")
    p.add_argument("--cqt-bins", type=int, default=84, help="rendered sets: 84 (12/octave) or 336 (48/octave, MERT's; slow on CPU)")
    p.add_argument("--pool", choices=("mean", "mean+std"), default="mean",
                   help="rendered sets: pool each clip's frames by their mean (MARBLE's) or mean and std, for every "
                        "feature alike")
    p.add_argument("--mlp", type=int, default=512, help="rendered sets: hidden width of the MLP probe (0: linear only)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random-weights baseline and the probes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

"""Labelled probe sets: one shape for every source, so the same probes run on each.

    read_notes(dir)             rendered GM notes (render.py): pitch, family
    read_keys(dir)              rendered music21 pieces (render.py): key (24 classes)

Each returns a ``ProbeSet``: audio file paths, a train/test flag per file, and integer labels
per task (class names alongside). ``load_clips`` decodes them; files that fail to decode are
counted skips (``ReadStats``), never a crash. These are the offline demo's sets; the public
benchmarks (NSynth, GTZAN, GiantSteps, MagnaTagATune, Emomusic, with MARBLE's train / valid / test
splits) are read by ``benchmarks.py`` and decoded by ``decode_clips``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..stats import ReadStats
from .io import AudioReadError, load_audio


@dataclass
class ProbeSet:
    name: str
    files: list[Path]
    train: list[bool]  # True: the probe's training split; False: its test split
    labels: dict[str, list[int]]  # task -> class index per file
    classes: dict[str, list[str]] = field(default_factory=dict)  # task -> class names

    def __post_init__(self) -> None:
        n = len(self.files)
        if len(self.train) != n or any(len(v) != n for v in self.labels.values()):
            raise ValueError(f"probe set {self.name}: files, split flags and labels differ in length")
        if n and (all(self.train) or not any(self.train)):
            raise ValueError(f"probe set {self.name}: needs both training and test files, "
                             f"got {sum(self.train)} train / {n - sum(self.train)} test")


def decode_clips(files: list[Path], sample_rate: int = 24000, max_seconds: float | None = None,
                 progress: bool = False, desc: str = "reading",
                 offsets: list[float] | None = None) -> tuple[list[torch.Tensor], list[int], ReadStats]:
    """Decode every file (from ``offsets[i]`` seconds, for at most ``max_seconds``): (clips (S,) float32
    each, indices of the files kept, stats); bad files are skipped."""
    from tqdm import tqdm

    stats = ReadStats(unit="clips")
    clips, keep = [], []
    for i, path in enumerate(tqdm(files, desc=desc, disable=not progress)):
        stats.files += 1
        try:
            clips.append(torch.from_numpy(load_audio(path, sample_rate, max_seconds=max_seconds,
                                                     offset_seconds=offsets[i] if offsets else None)))
        except AudioReadError as e:
            stats.skip(e.reason)
            continue
        keep.append(i)
        stats.records += 1
    return clips, keep, stats


def stream_features(files: list[Path], extract: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]],
                    sample_rate: int = 24000, max_seconds: float | None = None, chunk: int = 32,
                    progress: bool = False, desc: str = "features",
                    offsets: list[float] | None = None) -> tuple[dict[str, torch.Tensor], list[int], ReadStats]:
    """Decode ``chunk`` files at a time and keep only their features, never the whole set's audio
    (MagnaTagATune's 25,863 29-s clips would be 72 GB of samples at 24 kHz). ``extract``: name ->
    fn(clips) -> (n, ...) features. Returns (name -> features of the kept files, their indices, stats)."""
    from tqdm import tqdm

    stats = ReadStats(unit="clips")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in extract}
    keep: list[int] = []
    for start in tqdm(range(0, len(files), chunk), desc=desc, disable=not progress):
        clips, kept, st = decode_clips(files[start : start + chunk], sample_rate, max_seconds,
                                       offsets=offsets[start : start + chunk] if offsets else None)
        stats.files += st.files
        stats.records += st.records
        for reason, n in st.skipped.items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + n
        keep += [start + k for k in kept]
        if clips:
            for name, fn in extract.items():
                parts[name].append(fn(clips))
    feats = {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}
    return feats, keep, stats


def load_clips(ps: ProbeSet, sample_rate: int = 24000, max_seconds: float | None = None,
               progress: bool = False) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor], ReadStats]:
    """Decode every file: (clips, split (N,) bool, labels task -> (N,) long, stats); bad files are skipped."""
    clips, keep, stats = decode_clips(ps.files, sample_rate, max_seconds, progress, f"reading {ps.name}")
    idx = torch.tensor(keep, dtype=torch.long)
    split = torch.tensor(ps.train, dtype=torch.bool)[idx]
    labels = {t: torch.tensor(v, dtype=torch.long)[idx] for t, v in ps.labels.items()}
    return clips, split, labels, stats


def _hash_split(key: str, test_fraction: float, seed: int = 0) -> bool:
    """True (train) unless ``key`` hashes into the test fraction: stable across machines and runs."""
    h = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF >= test_fraction


def read_notes(folder: str | Path) -> ProbeSet:
    """The rendered GM note set (``tessera prepare audio-notes``): pitch (from its lowest) and family.
    The test split holds out whole GM programs."""
    from .render import GM_FAMILIES, read_note_set

    folder = Path(folder)
    notes = read_note_set(folder)
    low = min(n.pitch for n in notes)
    pitches = sorted({n.pitch for n in notes})
    return ProbeSet(
        "notes", [folder / n.file for n in notes], [n.split == "train" for n in notes],
        {"pitch": [n.pitch - low for n in notes], "family": [n.family for n in notes]},
        {"pitch": [str(p) for p in range(low, pitches[-1] + 1)],
         "family": list(GM_FAMILIES[: max(n.family for n in notes) + 1])},
    )


def read_keys(folder: str | Path) -> ProbeSet:
    """The rendered music21 pieces (``tessera prepare audio-keys``): key, 24 classes (tonic x mode).
    The test split holds out whole pieces (every transposition of a piece sits on one side)."""
    from .render import KEY_NAMES, read_key_set

    folder = Path(folder)
    clips = read_key_set(folder)
    return ProbeSet("keys", [folder / c.file for c in clips], [c.split == "train" for c in clips],
                    {"key": [c.key for c in clips]}, {"key": list(KEY_NAMES)})

"""Labelled probe sets: one shape for every source, so the same probes run on each.

    read_notes(dir)             rendered GM notes (render.py): pitch, family
    read_keys(dir)              rendered music21 pieces (render.py): key (24 classes)
    read_nsynth(train, test)    NSynth folders (examples.json + audio/*.wav): pitch, family
    read_gtzan(dir[, splits])   GTZAN genre folders (<genre>/*.wav): genre

Each returns a ``ProbeSet``: audio file paths, a train/test flag per file, and integer labels
per task (class names alongside). ``load_clips`` decodes them; files that fail to decode are
counted skips (``ReadStats``), never a crash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..stats import ReadStats
from .io import AudioReadError, list_audio_files, load_audio


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


def load_clips(ps: ProbeSet, sample_rate: int = 24000, max_seconds: float | None = None,
               progress: bool = False) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor], ReadStats]:
    """Decode every file: (clips, split (N,) bool, labels task -> (N,) long, stats); bad files are skipped."""
    from tqdm import tqdm

    stats = ReadStats(unit="clips")
    clips, keep = [], []
    for i, path in enumerate(tqdm(ps.files, desc=f"reading {ps.name}", disable=not progress)):
        stats.files += 1
        try:
            clips.append(torch.from_numpy(load_audio(path, sample_rate, max_seconds=max_seconds)))
        except AudioReadError as e:
            stats.skip(e.reason)
            continue
        keep.append(i)
        stats.records += 1
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


def read_nsynth(train: str | Path, test: str | Path) -> ProbeSet:
    """NSynth (``nsynth-train`` / ``nsynth-test`` folders, each ``examples.json`` + ``audio/<note>.wav``):
    pitch (MIDI 0-127, as MARBLE) and instrument family (11 classes). Notes listed in the json whose
    WAV is missing are left out and counted in the error if none remain."""
    families: dict[int, str] = {}
    files, split, pitch, family = [], [], [], []
    for folder, is_train in ((Path(train), True), (Path(test), False)):
        meta = folder / "examples.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{meta} not found: give an NSynth split folder (examples.json + audio/)")
        try:
            examples = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta} is not valid JSON ({e}); re-extract the NSynth archive") from None
        missing = 0
        for name, ex in sorted(examples.items()):
            wav = folder / "audio" / f"{name}.wav"
            if not wav.is_file():
                missing += 1
                continue
            try:
                p, f = int(ex["pitch"]), int(ex["instrument_family"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{meta}: entry {name!r} lacks an integer pitch or instrument_family") from None
            families[f] = ex.get("instrument_family_str", str(f))
            files.append(wav)
            split.append(is_train)
            pitch.append(p)
            family.append(f)
        if missing == len(examples):
            raise FileNotFoundError(f"none of the {len(examples)} notes in {meta} has its WAV under {folder / 'audio'}")
    return ProbeSet("nsynth", files, split, {"pitch": pitch, "family": family},
                    {"pitch": [str(p) for p in range(128)],
                     "family": [families.get(i, str(i)) for i in range(max(families) + 1)]})


def read_gtzan(folder: str | Path, splits: str | Path | None = None, test_fraction: float = 0.2) -> ProbeSet:
    """GTZAN (``<folder>/<genre>/<file>.wav``, 10 genres): genre.

    ``splits``: a folder with ``train_filtered.txt`` and ``test_filtered.txt`` (lines such as
    ``blues/blues.00000.wav``; the fault-filtered split MARBLE uses), else a stable hash split of
    ``test_fraction`` of the files (not comparable with published figures).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give GTZAN's genres folder (one sub-folder per genre)")
    genres = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if len(genres) < 2:
        raise ValueError(f"{folder} has {len(genres)} genre folders; GTZAN has 10 (blues, classical, ...)")
    if splits is not None:
        sides = {}
        for side, fname in (("train", "train_filtered.txt"), ("test", "test_filtered.txt")):
            path = Path(splits) / fname
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: the split folder needs train_filtered.txt and test_filtered.txt")
            sides[side] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        listed = [(r, True) for r in sides["train"]] + [(r, False) for r in sides["test"]]
        files = [folder / r for r, _ in listed]
        train = [t for _, t in listed]
    else:
        files = [p for g in genres for p in list_audio_files(folder / g)]
        train = [_hash_split(p.name, test_fraction) for p in files]
    labels = []
    for p in files:
        g = p.parent.name
        if g not in genres:
            raise ValueError(f"{p}: its folder {g!r} is not one of the genres under {folder}")
        labels.append(genres.index(g))
    return ProbeSet("gtzan", files, train, {"genre": labels}, {"genre": genres})

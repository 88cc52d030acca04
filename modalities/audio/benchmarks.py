"""MARBLE's music probing tasks, read from the files their users download (no conversion step).

    read_benchmark("nsynth-pitch", root)       root/nsynth-{train,valid,test}/examples.json + audio/*.wav
    read_benchmark("nsynth-instrument", root)  the same folders, instrument family (11 classes)
    read_benchmark("gtzan", root)              root/{train,valid,test}_filtered.txt + root/genres/<genre>/*.wav
    read_benchmark("giantsteps-key", root)     MARBLE's giantsteps_clips: root/meta.json + root/wav/<clip>.wav,
                                               or the raw downloads: annotation repositories + audio/*.mp3
    read_benchmark("mtt", root)                root/annotations_final.csv + root/mp3/<d>/<clip>.mp3
    read_benchmark("emomusic", root)           root/songs_info.csv + root/static_annotations.csv
                                               + root/clips_45seconds/<song_id>.mp3

Each returns a ``Benchmark``: audio paths, MARBLE's train / valid / test split per clip, targets,
the task kind (multiclass, multilabel, regression) and its metric, and ``stats``, the records that
were skipped and why. Two kinds of trouble, kept apart:
- a record that is well-formed but unusable (its audio file is missing, a pitch outside 0-127, an
  instrument family NSynth does not have) is skipped and counted;
- a record that does not fit the format (a missing field, a value of the wrong type, a line that is
  not ``<genre>/<file>``) is an error naming the file, the record and the field: the folder is not
  the data set it claims to be, and guessing would give figures that cannot be compared.
Audio that fails to decode is counted later, when the clips are read (``datasets.decode_clips``).

Upstream files consulted (a43992899/MARBLE-Benchmark unless noted) are cited in each reader.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..stats import ReadStats
from .metrics import KEY_CLASSES

SPLITS = ("train", "valid", "test")

# benchmark/tasks/NSynth/NSynthI_dataset.py: class2id over instrument_family_str
NSYNTH_FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
                   "synth_lead", "vocal")
# benchmark/tasks/GTZAN/GTZAN_dataset.py: class2id over the list line's first path component
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
_ENHARMONIC = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb"}  # GS/preprocess.py's spelling


@dataclass
class Benchmark:
    task: str  # the --task name, e.g. "gtzan"
    files: list[Path]
    split: list[str]  # "train" | "valid" | "test" per file
    targets: Tensor  # multiclass: (N,) long; multilabel: (N, K) float 0/1; regression: (N, K) float
    kind: str  # "multiclass" | "multilabel" | "regression"
    classes: list[str]  # class, tag or output names
    metric: str  # the validation metric that picks hyperparameters and the layer
    source: str  # the upstream files this reader follows
    groups: list[str] | None = None  # song id per clip: GiantSteps' song-level (ensemble) score
    offsets: list[float] | None = None  # where each clip starts in its file (s); None: at 0
    clip_seconds: float | None = None  # each clip's length when clips are windows of longer files
    stats: ReadStats = field(default_factory=lambda: ReadStats(unit="records"))

    def __post_init__(self) -> None:
        n = len(self.files)
        if len(self.split) != n or len(self.targets) != n or any(v is not None and len(v) != n
                                                                 for v in (self.groups, self.offsets)):
            raise ValueError(f"{self.task}: files, splits and targets differ in length")
        bad = set(self.split) - set(SPLITS)
        if bad:
            raise ValueError(f"{self.task}: unknown split names {sorted(bad)}; expected train, valid, test")

    def counts(self) -> dict[str, int]:
        return {s: self.split.count(s) for s in SPLITS}

    def require_splits(self, where: str) -> None:
        """Every split must hold clips: hyperparameters are chosen on valid and reported on test."""
        empty = [s for s, n in self.counts().items() if n == 0]
        if empty:
            raise ValueError(f"{where}: no usable {'/'.join(empty)} clips ({self.stats}); "
                             f"{self.task} needs train, valid and test")


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); download or extract it again") from None


def _field(path: Path, record: str, row: dict, name: str, typ: type):
    """``row[name]`` as ``typ``; anything else is a format error naming the file, the record and the field."""
    if not isinstance(row, dict):
        raise ValueError(f"{path}: {record} is a {type(row).__name__}, not an object")
    if name not in row:
        raise ValueError(f"{path}: {record} has no field {name!r}")
    v = row[name]
    if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ValueError(f"{path}: {record}: field {name!r} is {v!r}, not an integer")
    if typ is str and not isinstance(v, str):
        raise ValueError(f"{path}: {record}: field {name!r} is {v!r}, not a string")
    return v


def read_nsynth(root: str | Path, label: str = "pitch") -> Benchmark:
    """NSynth, MARBLE's ``NSynthP`` (``label="pitch"``, 128 classes: the MIDI pitch) or ``NSynthI``
    (``label="instrument"``, 11 families by ``instrument_family_str``).

    Layout: NSynth's own ``nsynth-{train,valid,test}.jsonwav`` archives extracted under ``root``: each
    ``nsynth-<split>/examples.json`` maps a note name to its record (``pitch``, ``instrument_family_str``,
    ``velocity``, ...) and ``nsynth-<split>/audio/<name>.wav`` is its 4 s, 16 kHz note. Followed:
    ``benchmark/tasks/NSynth/NSynthP_dataset.py`` and ``NSynthI_dataset.py`` (the split folder names and
    the fields), ``exp_scripts/download/download_nsynth.sh`` (the archives). MARBLE's feature dataset
    shifts pitch by one (``pitch - 1``); over 128 classes that does not change accuracy, so the class
    here is the MIDI number itself.
    """
    if label not in ("pitch", "instrument"):
        raise ValueError(f"NSynth label {label!r}: choose pitch or instrument")
    root = Path(root)
    name = "nsynth-pitch" if label == "pitch" else "nsynth-instrument"
    stats = ReadStats(unit="notes")
    files, split, y = [], [], []
    for s in SPLITS:
        folder = root / f"nsynth-{s}"
        meta = folder / "examples.json"
        examples = _load_json(meta, "give the folder holding NSynth's nsynth-train, nsynth-valid and nsynth-test "
                                    "(extracted from nsynth-<split>.jsonwav.tar.gz)")
        if not isinstance(examples, dict):
            raise ValueError(f"{meta} holds a {type(examples).__name__}; NSynth's examples.json maps note names to records")
        stats.files += 1
        for note, ex in examples.items():
            record = f"note {note!r}"
            if label == "pitch":
                v = _field(meta, record, ex, "pitch", int)
                if not 0 <= v < 128:
                    stats.skip("pitch_out_of_range")
                    continue
            else:
                fam = _field(meta, record, ex, "instrument_family_str", str)
                if fam not in NSYNTH_FAMILIES:
                    stats.skip("unknown_family")
                    continue
                v = NSYNTH_FAMILIES.index(fam)
            wav = folder / "audio" / f"{note}.wav"
            if not wav.is_file():
                stats.skip("missing_audio")
                continue
            files.append(wav)
            split.append(s)
            y.append(v)
            stats.records += 1
    classes = [str(p) for p in range(128)] if label == "pitch" else list(NSYNTH_FAMILIES)
    return Benchmark(name, files, split, torch.tensor(y, dtype=torch.long), "multiclass", classes, "accuracy",
                     "MARBLE benchmark/tasks/NSynth/NSynth{P,I}_dataset.py; NSynth examples.json", stats=stats)


def _gtzan_audio_dir(root: Path) -> Path:
    for cand in (root / "genres", root / "genres_original", root / "Data" / "genres_original"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"{root} holds no genres/ (or Data/genres_original/) folder: give the GTZAN folder "
                            "with the audio and MARBLE's train/valid/test_filtered.txt")


def read_gtzan(root: str | Path) -> Benchmark:
    """GTZAN genre with MARBLE's fault-filtered split: ``root/{train,valid,test}_filtered.txt`` (one
    ``<genre>/<genre>.<nnnnn>.wav`` per line, Kereliuk et al.'s artist-filtered lists from
    coreyker/dnn-mgr, as ``exp_scripts/download/download_gtzan.sh`` fetches them) and the audio under
    ``root/genres`` (or the Kaggle copy's ``Data/genres_original``). The label is the line's first path
    component (``benchmark/tasks/GTZAN/GTZAN_dataset.py``). The Kaggle copy's broken jazz.00054.wav is
    counted when it fails to decode.
    """
    root = Path(root)
    audio = None
    stats = ReadStats(unit="clips")
    files, split, y, seen = [], [], [], set()
    for s in SPLITS:
        path = root / f"{s}_filtered.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the GTZAN folder needs MARBLE's train_filtered.txt, "
                                    "valid_filtered.txt and test_filtered.txt (coreyker/dnn-mgr's gtzan/ lists)")
        audio = audio or _gtzan_audio_dir(root)
        stats.files += 1
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            parts = rel.split("/")
            if len(parts) != 2 or not parts[1]:
                raise ValueError(f"{path}, line {i}: {rel!r} is not <genre>/<file>.wav (the audio path field)")
            if parts[0] not in GTZAN_GENRES:
                raise ValueError(f"{path}, line {i}: genre field {parts[0]!r} is not one of GTZAN's "
                                 f"{', '.join(GTZAN_GENRES)}")
            if rel in seen:
                stats.skip("duplicate")
                continue
            seen.add(rel)
            if not (audio / rel).is_file():
                stats.skip("missing_audio")
                continue
            files.append(audio / rel)
            split.append(s)
            y.append(GTZAN_GENRES.index(parts[0]))
            stats.records += 1
    return Benchmark("gtzan", files, split, torch.tensor(y, dtype=torch.long), "multiclass", list(GTZAN_GENRES),
                     "accuracy", "MARBLE benchmark/tasks/GTZAN/GTZAN_dataset.py; exp_scripts/download/download_gtzan.sh",
                     stats=stats)


def parse_key(text: str) -> int | None:
    """``"Eb minor"`` / ``"D# minor"`` / ``"eb minor"`` -> index into ``KEY_CLASSES``; None if not a key."""
    parts = text.split()
    if len(parts) != 2 or parts[1].lower() not in ("major", "minor"):
        return None
    tonic = parts[0][:1].upper() + parts[0][1:].lower()
    tonic = _ENHARMONIC.get(tonic, tonic)
    name = f"{tonic} {parts[1].lower()}"
    return KEY_CLASSES.index(name) if name in KEY_CLASSES else None


def read_giantsteps(root: str | Path, clip_seconds: float = 30.0) -> Benchmark:
    """GiantSteps key from MARBLE's prepared clips (``root/meta.json`` + ``wav/``) or, when there is no
    meta.json, from the raw downloads MARBLE's ``download_gs.sh`` leaves (``read_giantsteps_raw``)."""
    root = Path(root)
    if (root / "meta.json").exists() or not any(root.glob("giantsteps-*key-dataset*")):
        return read_giantsteps_clips(root)
    return read_giantsteps_raw(root, clip_seconds)


def _find(root: Path, pattern: str, what: str) -> Path:
    hits = sorted(p for p in root.glob(pattern) if p.is_dir())
    if not hits:
        raise FileNotFoundError(f"{root / pattern} not found: {what}")
    return hits[0]


def _tsv_rows(path: Path, need: tuple[str, ...]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the GiantSteps MTG key annotations are incomplete")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        fields = [h.strip() for h in reader.fieldnames or []]
        missing = [n for n in need if n not in fields]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} (tab-separated; has {', '.join(fields) or 'no header'})")
        return [(i, {(k or "").strip(): (v or "").strip() for k, v in r.items()}) for i, r in enumerate(reader, 2)]


def _track_id(path: Path, line: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: field 'ID' is {text!r}, not a track number") from None


def read_giantsteps_raw(root: str | Path, clip_seconds: float = 30.0) -> Benchmark:
    """GiantSteps key from the raw downloads, split and clipped as MARBLE's ``benchmark/tasks/GS/preprocess.py``
    (from jukemir) does, without its ffmpeg step:

    - ``root/giantsteps-mtg-key-dataset-<commit>/`` (train / valid): ``md5/<id>.LOFI.md5`` lists the
      tracks; ``annotations/annotations.txt`` (tab-separated ``ID``, ``MANUAL KEY``, ``C``) gives the
      key, and tracks with confidence ``C`` other than 2 or several keys (a ``/``) are dropped;
      ``annotations/beatport_metadata.txt`` (``ID``, ``ARTIST``, comma-separated artists) gives the
      artist split: SHA-1 of each lower-cased artist modulo 116, 100 train : 16 valid, then every
      artist sharing a track with a valid artist made valid (two passes).
    - ``root/giantsteps-key-dataset-<commit>/`` (test): ``md5/`` and ``annotations/key/<id>.LOFI.key``.
    - ``root/audio/<id>.LOFI.mp3`` (both sets; MARBLE's ``download.py`` puts them there).

    Each track becomes its whole ``clip_seconds`` windows from the start (a shorter tail is dropped);
    the clips of a track share its song id for the song-level score.
    """
    root = Path(root)
    mtg = _find(root, "giantsteps-mtg-key-dataset*", "unzip MARBLE's mtg-key-annotations.zip here")
    test = _find(root, "giantsteps-key-dataset*", "unzip MARBLE's key-annotations.zip here")
    audio = root / "audio"
    stats = ReadStats(unit="tracks")
    meta_path = mtg / "annotations" / "beatport_metadata.txt"
    ann_path = mtg / "annotations" / "annotations.txt"
    artists = {_track_id(meta_path, i, r["ID"]): [a.strip() for a in r["ARTIST"].split(",")]
               for i, r in _tsv_rows(meta_path, ("ID", "ARTIST"))}
    ratios = ["train"] * 100 + ["valid"] * 16
    artist_split = {a: ratios[int(hashlib.sha1(a.lower().encode()).hexdigest(), 16) % len(ratios)]
                    for names in artists.values() for a in names}
    for _ in range(2):  # collaborators of valid artists are valid (two hops)
        for names in artists.values():
            if any(artist_split[a] == "valid" for a in names):
                for a in names:
                    artist_split[a] = "valid"
    keys = {_track_id(ann_path, i, r["ID"]): (i, r) for i, r in _tsv_rows(ann_path, ("ID", "MANUAL KEY", "C"))}
    tracks = []  # (id, split, key)
    for md5 in sorted((mtg / "md5").glob("*.md5")):
        did = int(md5.name.split(".")[0])
        stats.files += 1
        if did not in keys or did not in artists:
            stats.skip("no_annotation")
            continue
        line, r = keys[did]
        if r["C"] != "2":
            stats.skip("low_confidence")
            continue
        if "/" in r["MANUAL KEY"]:
            stats.skip("several_keys")
            continue
        key = parse_key(r["MANUAL KEY"])
        if key is None:
            raise ValueError(f"{ann_path}, line {line}: field 'MANUAL KEY' is {r['MANUAL KEY']!r}, not a key such as 'D# minor'")
        tracks.append((did, "valid" if any(artist_split[a] == "valid" for a in artists[did]) else "train", key))
    for md5 in sorted((test / "md5").glob("*.md5")):
        did = int(md5.name.split(".")[0])
        stats.files += 1
        kf = test / "annotations" / "key" / f"{did}.LOFI.key"
        if not kf.is_file():
            stats.skip("no_annotation")
            continue
        key = parse_key(kf.read_text(encoding="utf-8").strip())
        if key is None:
            raise ValueError(f"{kf}: {kf.read_text(encoding='utf-8').strip()!r} is not a key such as 'Eb minor'")
        tracks.append((did, "test", key))
    import soundfile as sf

    files, split, y, groups, offsets = [], [], [], [], []
    for did, s, key in tracks:
        mp3 = audio / f"{did}.LOFI.mp3"
        if not mp3.is_file():
            stats.skip("missing_audio")
            continue
        try:
            seconds = sf.info(str(mp3)).duration
        except (sf.LibsndfileError, RuntimeError, OSError):
            stats.skip("unreadable")
            continue
        n = int(seconds // clip_seconds)
        if n == 0:
            stats.skip("shorter_than_a_clip")
            continue
        stats.records += 1
        for c in range(n):
            files.append(mp3)
            split.append(s)
            y.append(key)
            groups.append(str(did))
            offsets.append(c * clip_seconds)
    return Benchmark("giantsteps-key", files, split, torch.tensor(y, dtype=torch.long), "multiclass",
                     list(KEY_CLASSES), "key_score_song",
                     "MARBLE benchmark/tasks/GS/{preprocess,download,GS_dataset,utils}.py; GiantSteps key and MTG key "
                     "annotation repositories; mir_eval/key.py", groups=groups, stats=stats, offsets=offsets,
                     clip_seconds=clip_seconds)


def read_giantsteps_clips(root: str | Path) -> Benchmark:
    """GiantSteps key as MARBLE prepares it (``benchmark/tasks/GS/preprocess.py``): ``root/meta.json``
    maps a clip id to ``{"split": train|valid|test, "y": "<tonic> <mode>", "clip": {"audio_uid": song, ...}}``
    and ``root/wav/<clip id>.wav`` is its 30 s clip. The train / valid split is MARBLE's (jukemir's)
    artist-stratified one over the GiantSteps MTG key set; test is the GiantSteps key set. Classes:
    ``KEY_CLASSES`` (``GS_dataset.py``, flats; sharps are mapped as the preprocessing does). Songs are
    scored by the mean of their clips' probabilities (``GS/utils.py``'s "mean" ensemble).
    """
    root = Path(root)
    meta = root / "meta.json"
    entries = _load_json(meta, "give MARBLE's giantsteps_clips folder (meta.json + wav/), written by its "
                               "benchmark/tasks/GS/preprocess.py, or the raw data/GS folder (annotation "
                               "repositories + audio/)")
    if not isinstance(entries, dict):
        raise ValueError(f"{meta} holds a {type(entries).__name__}; MARBLE's meta.json maps clip ids to records")
    stats = ReadStats(files=1, unit="clips")
    files, split, y, groups = [], [], [], []
    for uid, rec in entries.items():
        record = f"clip {uid!r}"
        s = _field(meta, record, rec, "split", str)
        if s not in SPLITS:
            raise ValueError(f"{meta}: {record}: field 'split' is {s!r}, not train, valid or test")
        key = parse_key(_field(meta, record, rec, "y", str))
        if key is None:
            raise ValueError(f"{meta}: {record}: field 'y' is {rec['y']!r}, not a key such as 'Eb minor'")
        clip = rec.get("clip") or {}
        song = str(clip.get("audio_uid", uid)) if isinstance(clip, dict) else str(uid)
        wav = root / "wav" / f"{uid}.wav"
        if not wav.is_file():
            stats.skip("missing_audio")
            continue
        files.append(wav)
        split.append(s)
        y.append(key)
        groups.append(song)
        stats.records += 1
    return Benchmark("giantsteps-key", files, split, torch.tensor(y, dtype=torch.long), "multiclass",
                     list(KEY_CLASSES), "key_score_song",
                     "MARBLE benchmark/tasks/GS/{preprocess,GS_dataset,utils}.py; mir_eval/key.py",
                     groups=groups, stats=stats)


def _read_tsv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))


def read_mtt(root: str | Path, top_k: int = 50) -> Benchmark:
    """MagnaTagATune, the top-50 tags: ``root/annotations_final.csv`` (tab-separated, every field
    quoted, CRLF line ends: ``clip_id``, 188 tag columns of 0/1, ``mp3_path``) and the audio under ``root/mp3``
    (``<hex digit>/<name>.mp3``). As ``benchmark/tasks/MTT/preprocess.py``: the 50 tags with the most
    positive clips over the whole file (ties: the earlier column), and the split by the first hex
    digit of ``mp3_path``: 0-b train, c valid, d-f test (12:1:3). Clips with no tag are kept, as there.
    """
    root = Path(root)
    path = root / "annotations_final.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the MagnaTagATune folder (annotations_final.csv + mp3/)")
    rows = _read_tsv(path)
    if not rows:
        raise ValueError(f"{path} is empty; download annotations_final.csv again")
    header = [h.strip() for h in rows[0]]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise ValueError(f"{path}: the header's first field must be 'clip_id' and its last 'mp3_path' "
                         f"(tab-separated), got {header[0]!r} ... {header[-1]!r}")
    tags = header[1:-1]
    if len(tags) < top_k:
        raise ValueError(f"{path}: {len(tags)} tag columns, fewer than the {top_k} tags asked for")
    audio = root / "mp3" if (root / "mp3").is_dir() else root
    stats = ReadStats(files=1, unit="clips")
    labels, paths, split = [], [], []
    for i, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}, line {i}: {len(row)} fields, the header has {len(header)}")
        vals = []
        for t, v in zip(tags, row[1:-1], strict=True):
            v = v.strip()
            if v not in ("0", "1"):
                raise ValueError(f"{path}, line {i}: tag field {t!r} is {v!r}, not 0 or 1")
            vals.append(v == "1")
        rel = row[-1].strip()
        if not rel or rel[0].lower() not in "0123456789abcdef":
            raise ValueError(f"{path}, line {i}: field 'mp3_path' is {rel!r}, not <hex digit>/<name>.mp3")
        labels.append(vals)
        paths.append(rel)
        d = int(rel[0], 16)
        split.append("train" if d < 12 else "valid" if d < 13 else "test")
    full = torch.tensor(labels, dtype=torch.float32).reshape(len(labels), len(tags))  # (N, 188)
    count = full.sum(0)
    top = sorted(range(len(tags)), key=lambda k: (-count[k].item(), k))[:top_k]
    keep = [i for i, rel in enumerate(paths) if (audio / rel).is_file()]
    for _ in range(len(paths) - len(keep)):
        stats.skip("missing_audio")
    stats.records = len(keep)
    return Benchmark("mtt", [audio / paths[i] for i in keep], [split[i] for i in keep], full[keep][:, top],
                     "multilabel", [tags[k] for k in top], "roc_auc",
                     "MARBLE benchmark/tasks/MTT/{preprocess,MTT_dataset}.py; exp_scripts/download/download_mtt.sh",
                     stats=stats)


def _read_csv(root: Path, stem: str, need: tuple[str, ...]) -> tuple[Path, list[tuple[int, dict]]]:
    """emoMusic's comma-separated annotation file ``stem``.csv (at root or root/annotations), rows with keys stripped."""
    for path in (root / f"{stem}.csv", root / "annotations" / f"{stem}.csv"):
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"{root / (stem + '.csv')} not found: give the emoMusic folder "
                                "(annotations.tar.gz and clips_45sec.tar.gz extracted there)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in reader.fieldnames or []]
        missing = [n for n in need if n not in fields]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} (has {', '.join(fields) or 'no header'})")
        rows = [(i, {(k or "").strip(): (v or "").strip() for k, v in r.items()}) for i, r in enumerate(reader, 2)]
    return path, rows


def _emo_artist_split(artist: str) -> str:
    """jukemir's (and MARBLE's) valid split of the development set: sha1 of the normalised artist, 8:2."""
    a = " ".join("".join(c for c in artist.lower() if ord(c) < 128 and (c.isalpha() or c.isspace())).split())
    return (["train"] * 8 + ["valid"] * 2)[int(hashlib.sha1(a.encode()).hexdigest(), 16) % 10]


def read_emomusic(root: str | Path) -> Benchmark:
    """Emomusic (1000 Songs): arousal and valence regression, as ``benchmark/tasks/EMO/preprocess.py``
    (adapted there from jukemir): ``songs_info.csv`` (``song_id``, ``Artist``, ``Mediaeval 2013 set``;
    "evaluation" -> test, else development) and ``static_annotations.csv`` (``song_id``,
    ``mean_arousal``, ``mean_valence``); the development songs split 8:2 into train / valid by a hash
    of the artist; both targets standardised with the development set's mean and std. Audio:
    ``clips_45seconds/<song_id>.mp3``. Metric: R^2, mean of arousal and valence (``EMO_prober.py``).
    """
    root = Path(root)
    info_path, info = _read_csv(root, "songs_info", ("song_id", "Artist", "Mediaeval 2013 set"))
    ann_path, ann = _read_csv(root, "static_annotations", ("song_id", "mean_arousal", "mean_valence"))

    def num(path, line, row, name, typ):
        try:
            return typ(float(row[name])) if typ is int else float(row[name])
        except ValueError:
            raise ValueError(f"{path}, line {line}: field {name!r} is {row[name]!r}, not a number") from None

    targets = {num(ann_path, i, r, "song_id", int): (num(ann_path, i, r, "mean_arousal", float),
                                                    num(ann_path, i, r, "mean_valence", float)) for i, r in ann}
    stats = ReadStats(files=2, unit="songs")
    songs = []  # (song id, development?, artist)
    for i, r in info:
        sid = num(info_path, i, r, "song_id", int)
        if sid not in targets:
            stats.skip("no_annotation")
            continue
        songs.append((sid, r["Mediaeval 2013 set"].lower() != "evaluation", r["Artist"]))
    dev = torch.tensor([targets[s] for s, d, _ in songs if d], dtype=torch.float64)
    if len(dev) < 2:
        raise ValueError(f"{info_path}: {len(dev)} annotated development songs; emoMusic has 744")
    mean, std = dev.mean(0), dev.std(0, unbiased=False)  # np.std, as the preprocessing
    files, split, y = [], [], []
    for sid, is_dev, artist in songs:
        mp3 = root / "clips_45seconds" / f"{sid}.mp3"
        if not mp3.is_file():
            stats.skip("missing_audio")
            continue
        files.append(mp3)
        split.append(_emo_artist_split(artist) if is_dev else "test")
        y.append(((torch.tensor(targets[sid], dtype=torch.float64) - mean) / std).float())
        stats.records += 1
    return Benchmark("emomusic", files, split, torch.stack(y) if y else torch.zeros(0, 2), "regression",
                     ["arousal", "valence"], "r2",
                     "MARBLE benchmark/tasks/EMO/{preprocess,EMO_dataset,EMO_prober}.py", stats=stats)


READERS: dict[str, Callable[[Path], Benchmark]] = {
    "nsynth-pitch": lambda root: read_nsynth(root, "pitch"),
    "nsynth-instrument": lambda root: read_nsynth(root, "instrument"),
    "gtzan": read_gtzan,
    "giantsteps-key": read_giantsteps,
    "mtt": read_mtt,
    "emomusic": read_emomusic,
}


def read_benchmark(task: str, root: str | Path) -> Benchmark:
    """One of ``READERS`` on its public folder; an unknown task or a missing folder is a one-line error."""
    if task not in READERS:
        raise ValueError(f"unknown music task {task!r}; choose one of {', '.join(READERS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: give the {task} data folder (docs/audio.md lists each layout)")
    return READERS[task](root)

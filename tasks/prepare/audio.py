"""Audio data into the cache: ``tessera prepare audio-notes | audio-keys | audio-codes``.

    tessera prepare audio-notes                 # -> $TESSERA_CACHE/audio/notes (1,296 notes, about 10 s)
    tessera prepare audio-keys                  # -> $TESSERA_CACHE/audio/keys (Bach, ~870 clips of 5 s)
    tessera prepare audio-codes MUSIC --out CODES --run runs/audio-tiny   # RVQ / k-means code labels

The note set (pitch + GM instrument family; test = held-out programs) and the key set (music21's
corpus; test = held-out pieces) are rendered from the TimGM6mb soundfont (GPL-2), copied once from
the pretty-midi wheel on PyPI. Every file is written through a ``.partial`` name and ``labels.json``
last, so an interrupted render leaves no half-written file and a rerun finishes the rest.
``AudioFolderDataModule.prepare_data`` calls ``ensure_default_set`` so that a config naming
``cache:audio/notes/train`` renders the set on first use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

from ..data.fetch import default_cache_dir, fetch_from_wheel
from ..jobs import UserError, job

SOUNDFONT = ("pretty-midi==0.2.11.post0", "pretty_midi/TimGM6mb.sf2")


def soundfont_path(cache: Path | None = None) -> Path:
    """The GM soundfont in the cache (copied from the pretty-midi wheel on first use)."""
    cache = cache or default_cache_dir()
    return fetch_from_wheel(*SOUNDFONT, cache / "soundfonts" / "TimGM6mb.sf2")


def default_notes_dir() -> Path:
    return default_cache_dir() / "audio" / "notes"


def default_keys_dir() -> Path:
    return default_cache_dir() / "audio" / "keys"


def set_ready(folder: Path) -> bool:
    """A rendered set is complete once its ``labels.json`` exists (written last)."""
    return (Path(folder) / "labels.json").is_file()


def prepare_notes(out: Path | None = None, programs_per_family: int = 3, low: int = 48, high: int = 84,
                  seconds: float = 0.75, progress: bool = True) -> Path:
    """Render the note set into ``out`` (default: the cache's); resumable. Returns the folder."""
    from modalities.audio.render import GM_FAMILIES, render_note_set

    out = Path(out or default_notes_dir()).expanduser()
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a folder for the note set")
    if not 0 <= low < high <= 128:
        raise UserError(f"--low {low} / --high {high}: need 0 <= low < high <= 128 (MIDI pitches)")
    notes = render_note_set(soundfont_path(), out, programs_per_family=programs_per_family,
                            pitches=(low, high), seconds=seconds, progress=progress)
    print(f"{len(notes)} notes in {out} (train {sum(n.split == 'train' for n in notes)}, "
          f"test {sum(n.split == 'test' for n in notes)}); per family: "
          f"{dict(Counter(GM_FAMILIES[n.family] for n in notes))}")
    return out


def prepare_keys(out: Path | None = None, composer: str = "bach", max_pieces: int | None = None,
                 transpositions: int = 1, seconds: float = 5.0, progress: bool = True) -> Path:
    """Render the key-detection set into ``out`` (default: the cache's); resumable. Returns the folder."""
    from modalities.audio.render import KEY_NAMES, render_key_set

    out = Path(out or default_keys_dir()).expanduser()
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a folder for the key set")
    clips = render_key_set(soundfont_path(), out, composer, max_pieces, transpositions, seconds, progress=progress)
    keys = Counter(KEY_NAMES[c.key] for c in clips)
    print(f"{len(clips)} clips in {out} (train {sum(c.split == 'train' for c in clips)}, "
          f"test {sum(c.split == 'test' for c in clips)}); {len(keys)} keys, most common {keys.most_common(3)}")
    return out


# the rendered sets a config may name as cache:<key>[/train|/test]; each builds itself on first use
DEFAULT_SETS = {
    "audio/notes": ("tessera prepare audio-notes", prepare_notes),
    "audio/keys": ("tessera prepare audio-keys", prepare_keys),
}


def default_set_of(raw: str | Path) -> tuple[str, Path] | None:
    """``cache:audio/notes/train`` -> ("audio/notes", its folder); None for any other path."""
    text = str(raw)
    if not text.startswith("cache:"):
        return None
    rel = text.removeprefix("cache:").strip("/")
    for key in DEFAULT_SETS:
        if rel == key or rel.startswith(key + "/"):
            return key, default_cache_dir() / key
    return None


def ensure_default_set(raw: str | Path, progress: bool = True) -> bool:
    """Render the default set ``raw`` names (``cache:audio/notes/...``) unless it is complete.
    Returns False when ``raw`` names no default set (a user's own folder)."""
    found = default_set_of(raw)
    if found is None:
        return False
    key, folder = found
    if not set_ready(folder):
        print(f"{raw}: rendering the default set into {folder} (once; `{DEFAULT_SETS[key][0]}` does the same)")
        DEFAULT_SETS[key][1](folder, progress=progress)
    return True


# ---- RVQ / k-means code labels for a folder of audio


def code_path(out: Path, audio: Path) -> Path:
    """Where the codes of ``audio`` go: a hash of its resolved path."""
    return out / f"{hashlib.sha1(str(audio.resolve()).encode()).hexdigest()[:16]}.safetensors"


def precompute(teacher, files: list[Path], out: Path, chunk_seconds: float = 30.0,
               sample_rate: int = 24000, progress: bool = True):
    """Codes (K, T) int16 of every file into ``out`` (one safetensors file each, written through a
    ``.partial`` name, so a rerun skips what is done); unreadable files are counted and listed in
    ``manifest.json``. Returns the ``ReadStats``."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from modalities.audio.io import AudioReadError, load_audio
    from modalities.stats import ReadStats

    out.mkdir(parents=True, exist_ok=True)
    stats = ReadStats(unit="files")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"files": {}, "skipped": {}}
    hop = 320  # both teachers' hop: 75 frames/s at 24 kHz
    chunk = int(chunk_seconds * sample_rate) // hop * hop  # whole frames per chunk
    for path in tqdm(files, desc="codes", disable=not progress):
        stats.files += 1
        target = code_path(out, path)
        if target.is_file():
            stats.skip("done_before")
            continue
        try:
            wav = torch.from_numpy(load_audio(path, sample_rate))
        except AudioReadError as e:
            stats.skip(e.reason)
            manifest["skipped"][str(path)] = e.reason
            continue
        with torch.no_grad():
            parts = [teacher(wav[None, i : i + chunk])[0] for i in range(0, len(wav), chunk)]  # each (K, T_i)
        codes = torch.cat(parts, dim=1).to(torch.int16)  # (K, T)
        partial = target.with_suffix(".partial")
        save_file({"codes": codes}, partial, metadata={"source": str(path), "frame_rate": "75"})
        partial.replace(target)
        manifest["files"][str(path)] = target.name
        stats.records += 1
        _write_json(manifest_path, manifest)
    _write_json(manifest_path, manifest, indent=1)
    return stats


def _write_json(path: Path, obj, indent: int | None = None) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(obj, indent=indent))
    partial.replace(path)


def acoustic_teacher(run: str | None = None, encodec: str | None = None, num_codebooks: int = 8):
    """The teacher whose codes to compute: a trained MERT run's (rebuilt by ``tasks.runs.load_system``,
    weights read with weights_only=True) or an EnCodec folder (facebook/encodec_24khz, or the
    ``encodec`` folder an rvq_tiny run wrote)."""
    if encodec is not None:
        from modalities.audio.teachers import RVQTeacher

        folder = Path(encodec).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"--encodec {folder}: no EnCodec config.json there; give an EnCodec folder "
                            "(facebook/encodec_24khz, or the <run>/encodec an rvq_tiny run wrote)")
        try:
            return RVQTeacher(num_codebooks=num_codebooks, init_from=str(folder))
        except ValueError as e:
            raise UserError(f"--encodec {folder}: {str(e).removeprefix('RVQTeacher: ')}") from None
        except OSError as e:
            raise UserError(f"--encodec {folder}: cannot load its weights ({str(e).splitlines()[0][:160]})") from None
    from ..runs import load_system

    system, _, _ = load_system(run)
    teacher = getattr(system, "rvq_teacher", None)
    if teacher is None or not teacher.fitted:
        raise UserError(f"--run {run}: its system ({type(system).__name__}) holds no fitted acoustic teacher "
                        "(a MERT run fits one at the start of fit); give a MERT run or --encodec")
    return teacher


# ---- the jobs


@job("prepare", "audio-notes", help="render the labelled GM note set (pitch, instrument family) into the cache",
     example="tessera prepare audio-notes --programs-per-family 2 --out /tmp/notes")
def audio_notes(args: argparse.Namespace) -> int:
    """Render one note per (GM program, MIDI pitch) from the TimGM6mb soundfont: WAV files under
    train/ and test/ (test: held-out programs) and labels.json. Resumable; the training configs
    (configs/audio/tiny.yaml, rvq_tiny.yaml) render the default set themselves on first use."""
    prepare_notes(args.out, args.programs_per_family, args.low, args.high, args.seconds, progress=not args.quiet)
    return 0


@audio_notes.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="folder (default: $TESSERA_CACHE/audio/notes)")
    p.add_argument("--programs-per-family", type=int, default=3, help="GM programs per family; the last is test")
    p.add_argument("--low", type=int, default=48, help="lowest MIDI pitch")
    p.add_argument("--high", type=int, default=84, help="one past the highest MIDI pitch")
    p.add_argument("--seconds", type=float, default=0.75, help="key-down time per note")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@job("prepare", "audio-keys", help="render the key-detection set (music21's corpus through the GM soundfont)",
     example="tessera prepare audio-keys --max-pieces 40 --out /tmp/keys")
def audio_keys(args: argparse.Namespace) -> int:
    """Render the first seconds of every corpus piece by a composer, as written and at seeded random
    transpositions (label moved with it), labelled by key (24 classes); test holds out whole pieces."""
    prepare_keys(args.out, args.composer, args.max_pieces, args.transpositions, args.seconds, progress=not args.quiet)
    return 0


@audio_keys.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="folder (default: $TESSERA_CACHE/audio/keys)")
    p.add_argument("--composer", default="bach", help="a composer in music21's corpus")
    p.add_argument("--max-pieces", type=int, default=None, help="render at most this many pieces")
    p.add_argument("--transpositions", type=int, default=1, help="random transpositions per piece, besides the original")
    p.add_argument("--seconds", type=float, default=5.0, help="rendered from each piece's start")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@job("prepare", "audio-codes", help="acoustic code labels (RVQ or k-means) for every audio file under a folder",
     example="tessera prepare audio-codes ~/music --out ~/music-codes --run runs/audio-tiny")
def audio_codes(args: argparse.Namespace) -> int:
    """One safetensors file per audio file (codes (K, T) int16 at 75 Hz, named by a hash of the file's
    path) from a trained MERT run's acoustic teacher (--run) or an EnCodec folder (--encodec).
    Resumes after an interruption; unreadable files are counted and listed in manifest.json."""
    from modalities.audio.io import list_audio_files

    src = Path(args.audio).expanduser()
    if not src.exists():
        raise UserError(f"{src} does not exist; give a folder of audio files (WAV/FLAC/OGG/MP3)")
    files = list_audio_files(src)
    if not files:
        raise UserError(f"{src} holds no audio files (WAV/FLAC/OGG/MP3/AIFF); give a folder of music")
    teacher = acoustic_teacher(args.run, args.encodec, args.num_codebooks)
    stats = precompute(teacher, files, Path(args.out).expanduser(), progress=not args.quiet)
    print(f"{stats}; codes in {args.out}")
    if stats.records == 0 and not stats.skipped.get("done_before"):
        raise UserError(f"no file under {src} could be decoded ({dict(stats.skipped)}); see {args.out}/manifest.json")
    return 0


@audio_codes.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", help="an audio file or a folder of audio files")
    p.add_argument("--out", required=True, help="folder for the codes (resumable)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a MERT run folder, its lightning_logs/version_N, or a .ckpt in it")
    src.add_argument("--encodec", help="a local EnCodec folder (e.g. facebook/encodec_24khz, or <rvq run>/encodec)")
    p.add_argument("--num-codebooks", type=int, default=8, help="codebooks used with --encodec")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

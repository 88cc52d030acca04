"""Labelled instrument notes rendered from a General MIDI soundfont: an NSynth-like probe set.

The soundfont is TimGM6mb.sf2 (GPL-2, bundled in the ``pretty-midi`` wheel on PyPI; copied once
into the git-ignored cache by ``tessera prepare audio-notes``); rendering runs in-process with
``tinysoundfont``. Every note is labelled by MIDI pitch, GM program and GM instrument family
(program // 8). Splits hold out whole *programs*: the test notes come from instruments the probe
never saw, so the family task measures timbre generalisation, not memorised presets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .io import resample

# General MIDI instrument families: program // 8
GM_FAMILIES = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive", "sound_effects",
)
PITCHED_FAMILIES = tuple(range(12))  # piano .. synth_pad: clear pitch and a sustained note


@dataclass
class Note:
    file: str  # path relative to the set's folder
    pitch: int  # MIDI key (60 = middle C)
    program: int  # GM program 0-127
    family: int  # program // 8
    velocity: int
    split: str  # train | test


def write_audio(path: Path, x: np.ndarray, sample_rate: int, fmt: str) -> None:
    """16-bit ``fmt`` (WAV / FLAC) written through ``NAME.partial``: a killed render leaves no
    half-written file under the real name, so a rerun (which keeps existing files) redoes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    sf.write(partial, x, sample_rate, subtype="PCM_16", format=fmt)
    partial.replace(path)


def write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def render_note(synth, channel: int, pitch: int, velocity: int, seconds: float, release: float,
                render_rate: int) -> np.ndarray:
    """One note: key down for ``seconds``, then ``release`` seconds of decay; mono float32."""
    synth.noteon(channel, pitch, velocity)
    on = np.frombuffer(synth.generate(int(seconds * render_rate)), dtype=np.float32).copy()
    synth.noteoff(channel, pitch)
    off = np.frombuffer(synth.generate(int(release * render_rate)), dtype=np.float32).copy()
    synth.notes_off()
    synth.generate(int(0.2 * render_rate))  # flush the tail so the next note starts from silence
    stereo = np.concatenate([on, off]).reshape(-1, 2)
    return stereo.mean(axis=1)


def render_note_set(
    soundfont: str | Path,
    out_dir: str | Path,
    families: tuple[int, ...] = PITCHED_FAMILIES,
    programs_per_family: int = 3,
    test_programs_per_family: int = 1,
    pitches: tuple[int, int] = (48, 84),
    velocity: int = 100,
    seconds: float = 0.75,
    release: float = 0.25,
    sample_rate: int = 24000,
    progress: bool = True,
) -> list[Note]:
    """Render every (program, pitch) into ``out_dir`` as 16-bit WAV + ``labels.json``; returns the notes.

    Programs per family are spread over the family's 8 (e.g. 0, 3, 6); the last
    ``test_programs_per_family`` of them form the test split. Existing files are kept (resumable).
    """
    import tinysoundfont
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render_rate = 48000  # the synth's native-quality rate; soxr takes it to sample_rate
    synth = tinysoundfont.Synth(samplerate=render_rate)
    sfid = synth.sfload(str(soundfont))
    step = max(8 // programs_per_family, 1)
    jobs = []
    for fam in families:
        progs = [fam * 8 + i * step for i in range(programs_per_family)]
        for j, prog in enumerate(progs):
            split = "test" if j >= programs_per_family - test_programs_per_family else "train"
            jobs += [(prog, fam, p, split) for p in range(pitches[0], pitches[1])]
    notes = []
    current = None
    for prog, fam, pitch, split in tqdm(jobs, desc="rendering notes", disable=not progress):
        name = f"{split}/{GM_FAMILIES[fam]}/p{prog:03d}_k{pitch:03d}_v{velocity:03d}.wav"
        path = out_dir / name
        if not path.is_file():
            if prog != current:
                synth.program_select(0, sfid, 0, prog)
                current = prog
            x = render_note(synth, 0, pitch, velocity, seconds, release, render_rate)
            x = resample(x, render_rate, sample_rate)
            write_audio(path, x, sample_rate, "WAV")
        notes.append(Note(name, pitch, prog, fam, velocity, split))
    write_text(out_dir / "labels.json", json.dumps([asdict(n) for n in notes]))  # last: the set is complete
    return notes


def read_note_set(folder: str | Path) -> list[Note]:
    """The notes of a rendered set (``labels.json``)."""
    path = Path(folder) / "labels.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: render the set first (tessera prepare audio-notes --out {Path(folder)})")
    return [Note(**d) for d in json.loads(path.read_text())]


# ---- key detection: music21's corpus rendered through the soundfont

KEY_NAMES = tuple(f"{t} {m}" for m in ("major", "minor")
                  for t in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"))
KEY_PROGRAMS = (0, 6, 19, 24, 48, 52, 68, 73)  # piano, harpsichord, church organ, guitar, strings, choir, oboe, flute


@dataclass
class KeyClip:
    file: str  # path relative to the set's folder
    piece: str  # corpus path of the piece (both transpositions of a piece share a split)
    key: int  # index into KEY_NAMES: tonic pitch class + 12 * (mode == minor)
    transpose: int  # semitones added to every note (and to the labelled tonic)
    program: int  # GM program it was rendered with
    split: str  # train | test


def score_key(score) -> tuple[int, str]:
    """(tonic pitch class, mode) of a music21 score: the written key signature, with the mode
    (and so the tonic: relative major or minor) chosen by music21's Krumhansl-Schmuckler
    analysis among the two keys that signature allows. Raises ValueError without a signature."""
    sigs = list(score.flatten().getElementsByClass("KeySignature"))
    if not sigs:
        raise ValueError("no key signature")
    sharps = sigs[0].sharps
    analysed = score.analyze("key")
    for k in [analysed, *analysed.alternateInterpretations]:
        if k.sharps == sharps:
            return k.tonic.pitchClass, k.mode
    return sigs[0].asKey("major").tonic.pitchClass, "major"


def piece_events(score, seconds: float, bpm: float) -> list[tuple[float, int, int]]:
    """(time s, +1 on / -1 off, MIDI pitch) of every note of ``score`` that starts before ``seconds``."""
    spq = 60.0 / bpm
    events = []
    for n in score.stripTies().flatten().notes:
        start = float(n.offset) * spq
        if start >= seconds:
            continue
        end = min(start + float(n.quarterLength) * spq, seconds)
        for p in n.pitches:
            events += [(start, 1, p.midi), (end, -1, p.midi)]
    return sorted(events, key=lambda e: (e[0], e[1]))  # offs before ons at the same time


def render_events(synth, events, seconds: float, render_rate: int, velocity: int = 90) -> np.ndarray:
    """Play (time, on/off, pitch) events on channel 0; ``seconds`` of mono float32."""
    chunks, now = [], 0.0
    for t, kind, pitch in events:
        if t > now:
            chunks.append(np.frombuffer(synth.generate(int(round((t - now) * render_rate))), dtype=np.float32))
            now = t
        if kind > 0:
            synth.noteon(0, pitch, velocity)
        else:
            synth.noteoff(0, pitch)
    if seconds > now:
        chunks.append(np.frombuffer(synth.generate(int(round((seconds - now) * render_rate))), dtype=np.float32))
    synth.notes_off()
    synth.generate(int(0.5 * render_rate))  # let the tails die before the next piece
    x = np.concatenate(chunks).reshape(-1, 2).mean(axis=1)
    peak = float(np.abs(x).max(initial=0.0))
    return x * (0.9 / peak) if peak > 0.9 else x  # chords of loud programs exceed 1: no clipping


def render_key_set(
    soundfont: str | Path,
    out_dir: str | Path,
    composer: str = "bach",
    max_pieces: int | None = None,
    transpositions: int = 1,
    seconds: float = 5.0,
    bpm: float = 96.0,
    test_fraction: float = 0.2,
    sample_rate: int = 24000,
    seed: int = 0,
    progress: bool = True,
) -> list[KeyClip]:
    """The first ``seconds`` of each corpus piece by ``composer``, as written and at ``transpositions``
    seeded random transpositions (-5..+6 semitones, label moved with it, so every key occurs), rendered
    with a GM program picked per piece; FLAC + ``labels.json`` in ``out_dir`` (resumable). Pieces
    without a key signature or notes are skipped (and counted in ``labels.json``'s ``skipped``)."""
    import hashlib

    import tinysoundfont
    from music21 import corpus
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render_rate = 48000
    synth = tinysoundfont.Synth(samplerate=render_rate)
    sfid = synth.sfload(str(soundfont))
    paths = sorted(corpus.getComposer(composer), key=str)[:max_pieces]
    if not paths:
        raise FileNotFoundError(f"music21's corpus has no pieces by {composer!r}")
    rng = np.random.default_rng(seed)
    clips, skipped, seen = [], {}, set()
    for path in tqdm(paths, desc=f"rendering {composer} pieces", disable=not progress):
        name = Path(path).stem
        shifts = [0] + [int(s) for s in rng.choice([s for s in range(-5, 7) if s], transpositions, replace=False)]
        if name in seen:  # the same piece in a second format (e.g. bwv277.krn and bwv277.mxl)
            skipped["duplicate"] = skipped.get("duplicate", 0) + 1
            continue
        seen.add(name)
        h = int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16)
        split = "test" if h / 0xFFFFFFFF < test_fraction else "train"
        program = KEY_PROGRAMS[h % len(KEY_PROGRAMS)]
        todo = [s for s in shifts if not (out_dir / split / f"{name}_t{s:+d}.flac").is_file()]
        try:
            score = corpus.parse(path)
            tonic, mode = score_key(score)
            events = piece_events(score, seconds, bpm) if todo else []
        except Exception as e:  # noqa: BLE001  (a corpus file music21 cannot read or analyse: skip it)
            reason = "no_key_signature" if "key signature" in str(e) else "unparsable"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        if todo and not events:
            skipped["no_notes"] = skipped.get("no_notes", 0) + 1
            continue
        for s in shifts:
            rel = f"{split}/{name}_t{s:+d}.flac"
            if s in todo:
                synth.program_select(0, sfid, 0, program)
                x = render_events(synth, [(t, k, p + s) for t, k, p in events], seconds, render_rate)
                write_audio(out_dir / rel, resample(x, render_rate, sample_rate), sample_rate, "FLAC")
            key = (tonic + s) % 12 + 12 * (mode == "minor")
            clips.append(KeyClip(rel, str(Path(path).relative_to(Path(path).parents[1])), key, s, program, split))
    write_text(out_dir / "labels.json", json.dumps({"clips": [asdict(c) for c in clips], "skipped": skipped}))
    return clips


def read_key_set(folder: str | Path) -> list[KeyClip]:
    """The clips of a rendered key set (``labels.json``)."""
    path = Path(folder) / "labels.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: render the set first (tessera prepare audio-keys --out {Path(folder)})")
    return [KeyClip(**d) for d in json.loads(path.read_text())["clips"]]

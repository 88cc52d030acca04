"""Labelled instrument notes rendered from a General MIDI soundfont: an NSynth-like probe set.

The soundfont is TimGM6mb.sf2 (GPL-2, bundled in the ``pretty-midi`` wheel on PyPI; copied once
into the git-ignored cache by ``scripts/render_notes.py``); rendering runs in-process with
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
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x, sample_rate, subtype="PCM_16")
        notes.append(Note(name, pitch, prog, fam, velocity, split))
    (out_dir / "labels.json").write_text(json.dumps([asdict(n) for n in notes]))
    return notes


def read_note_set(folder: str | Path) -> list[Note]:
    """The notes of a rendered set (``labels.json``)."""
    path = Path(folder) / "labels.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: render the set first (python scripts/render_notes.py)")
    return [Note(**d) for d in json.loads(path.read_text())]

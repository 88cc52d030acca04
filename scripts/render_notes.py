"""Render the NSynth-like note set (pitch + instrument family labels) into the git-ignored cache.

    python scripts/render_notes.py                       # -> $TESSERA_CACHE/audio/notes (about 1,300 notes)
    python scripts/render_notes.py --programs-per-family 2 --out /tmp/notes

The soundfont (TimGM6mb.sf2, GPL-2) is copied once from the pretty-midi wheel on PyPI.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from modalities.audio.render import GM_FAMILIES, render_note_set
from tasks.data.fetch import default_cache_dir, fetch_from_wheel

SOUNDFONT = ("pretty-midi==0.2.11.post0", "pretty_midi/TimGM6mb.sf2")


def soundfont_path(cache: Path | None = None) -> Path:
    cache = cache or default_cache_dir()
    return fetch_from_wheel(*SOUNDFONT, cache / "soundfonts" / "TimGM6mb.sf2")


def default_notes_dir() -> Path:
    return default_cache_dir() / "audio" / "notes"


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=default_notes_dir())
    p.add_argument("--programs-per-family", type=int, default=3)
    p.add_argument("--low", type=int, default=48, help="lowest MIDI pitch")
    p.add_argument("--high", type=int, default=84, help="one past the highest MIDI pitch")
    p.add_argument("--seconds", type=float, default=0.75, help="key-down time per note")
    a = p.parse_args(argv)
    notes = render_note_set(soundfont_path(), a.out, programs_per_family=a.programs_per_family,
                            pitches=(a.low, a.high), seconds=a.seconds)
    by = Counter((n.split, GM_FAMILIES[n.family]) for n in notes)
    print(f"{len(notes)} notes in {a.out} (train {sum(n.split == 'train' for n in notes)}, "
          f"test {sum(n.split == 'test' for n in notes)}); per family: "
          f"{dict(Counter(GM_FAMILIES[n.family] for n in notes))}")
    del by
    return a.out


if __name__ == "__main__":
    main()

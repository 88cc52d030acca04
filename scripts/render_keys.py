"""Render the key-detection set (music21's corpus through the GM soundfont) into the git-ignored cache.

    python scripts/render_keys.py                        # -> $TESSERA_CACHE/audio/keys (Bach, ~870 clips of 5 s)
    python scripts/render_keys.py --max-pieces 40 --out /tmp/keys

Labels: the written key signature, major or minor by music21's key analysis; each piece also at a
seeded random transposition (label moved with it). Test pieces are held out whole.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from render_notes import soundfont_path

from modalities.audio.render import KEY_NAMES, render_key_set
from tasks.data.fetch import default_cache_dir


def default_keys_dir() -> Path:
    return default_cache_dir() / "audio" / "keys"


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=default_keys_dir())
    p.add_argument("--composer", default="bach")
    p.add_argument("--max-pieces", type=int, default=None)
    p.add_argument("--transpositions", type=int, default=1, help="random transpositions per piece, besides the original")
    p.add_argument("--seconds", type=float, default=5.0, help="rendered from each piece's start")
    a = p.parse_args(argv)
    clips = render_key_set(soundfont_path(), a.out, a.composer, a.max_pieces, a.transpositions, a.seconds)
    keys = Counter(KEY_NAMES[c.key] for c in clips)
    print(f"{len(clips)} clips in {a.out} (train {sum(c.split == 'train' for c in clips)}, "
          f"test {sum(c.split == 'test' for c in clips)}); {len(keys)} keys, most common {keys.most_common(3)}")
    return a.out


if __name__ == "__main__":
    main()

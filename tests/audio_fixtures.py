"""Shared audio test material: sine tones, a tiny audio encoder folder, the cached soundfont, and a
runner that checks the CLI's one-line errors (imported by tests/test_audio_*.py, as cxr_fixtures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tasks.cli import main as cli_main


def tones(n, seconds=0.6, sr=24000):
    """``n`` semitone-spaced sines from 110 Hz, (S,) float32 each."""
    t = torch.arange(int(seconds * sr)) / sr
    return [0.3 * torch.sin(2 * torch.pi * 110 * 2 ** (i / 12) * t) for i in range(n)]


def tone_folder(tmp_path: Path, n: int, seconds: float, name: str = "music") -> Path:
    """A folder of ``n`` semitone-spaced sine WAVs at 24 kHz (t0.wav, t1.wav, ...)."""
    root = tmp_path / name
    root.mkdir()
    for i, x in enumerate(tones(n, seconds)):
        sf.write(root / f"t{i}.wav", x.numpy(), 24000)
    return root


def audio_encoder_folder(tmp_path: Path, name: str = "enc") -> Path:
    """The mert-tiny architecture, random weights, saved as an audio encoder folder."""
    from modalities.audio import create_audio_encoder
    from modalities.hub import save_encoder

    torch.manual_seed(0)
    return save_encoder(create_audio_encoder("mert-tiny"), tmp_path / name, meta={"modality": "audio", "sample_rate": 24000})


def other_modality_folder(src: Path, dst: Path) -> Path:
    """A copy of an encoder folder whose meta says it is a text encoder."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / "config.json").read_text())
    raw["meta"]["modality"] = "text"
    (dst / "config.json").write_text(json.dumps(raw))
    return dst


def cached_soundfont(cache: Path) -> Path:
    """Copy the soundfont from the user's cache into ``cache`` (tests never download); skip without one."""
    from tasks.data.fetch import default_cache_dir

    src = default_cache_dir() / "soundfonts" / "TimGM6mb.sf2"
    if not src.is_file():
        pytest.skip("soundfont not in the cache: run `tessera prepare audio-notes` once")
    dst = cache / "soundfonts" / "TimGM6mb.sf2"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst


def user_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI on a user's mistake: exit status 2, one line on stderr naming ``needles``, no traceback."""
    capsys.readouterr()
    try:
        rc = cli_main(argv)
    except SystemExit as e:  # argparse's own errors (unknown option, missing value)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    last = [ln for ln in err.strip().splitlines() if ln.strip()][-1]
    assert "error" in last, err
    for needle in needles:
        assert needle in last, (needle, err)
    return last

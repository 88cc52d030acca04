"""Precompute RVQ code labels for every audio file under a folder; resumes after interruption.

    python scripts/precompute_codes.py MUSIC_DIR --out CACHE_DIR --encodec path/to/encodec_24khz
    python scripts/precompute_codes.py MUSIC_DIR --out CACHE_DIR --ckpt run/checkpoints/last.ckpt

One safetensors file per audio file (codes (K, T) int16 at 75 Hz, named by a hash of the
file's path), written through a temporary name: a killed run leaves no half-written file, and
a rerun skips what is done. Unreadable files are counted and listed in manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from modalities.audio.io import AudioReadError, list_audio_files, load_audio
from modalities.audio.teachers import RVQTeacher
from modalities.stats import ReadStats


def code_path(out: Path, audio: Path) -> Path:
    return out / f"{hashlib.sha1(str(audio.resolve()).encode()).hexdigest()[:16]}.safetensors"


@torch.no_grad()
def precompute(teacher: RVQTeacher, files: list[Path], out: Path, chunk_seconds: float = 30.0,
               sample_rate: int = 24000, progress: bool = True) -> ReadStats:
    out.mkdir(parents=True, exist_ok=True)
    stats = ReadStats(unit="files")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"files": {}, "skipped": {}}
    hop = 320
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
        parts = [teacher(wav[None, i : i + chunk])[0] for i in range(0, len(wav), chunk)]  # each (K, T_i)
        codes = torch.cat(parts, dim=1).to(torch.int16)  # (K, T)
        partial = target.with_suffix(".partial")
        save_file({"codes": codes}, partial, metadata={"source": str(path), "frame_rate": "75"})
        partial.replace(target)
        manifest["files"][str(path)] = target.name
        stats.records += 1
        manifest_path.write_text(json.dumps(manifest))
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return stats


def main(argv=None) -> ReadStats:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help="a folder of audio files")
    p.add_argument("--out", type=Path, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--encodec", help="a local EnCodec folder (e.g. facebook/encodec_24khz)")
    src.add_argument("--ckpt", help="a MERTPretraining checkpoint whose fitted acoustic teacher (RVQ or k-means) to use")
    p.add_argument("--num-codebooks", type=int, default=8)
    a = p.parse_args(argv)
    if a.encodec:
        teacher = RVQTeacher(num_codebooks=a.num_codebooks, pretrained=a.encodec)
    else:
        from tasks.mert import MERTPretraining

        teacher = MERTPretraining.load_from_checkpoint(a.ckpt, map_location="cpu", weights_only=False).rvq_teacher
        if teacher is None or not teacher.fitted:
            raise SystemExit(f"{a.ckpt} holds no fitted RVQ teacher")
    stats = precompute(teacher, list_audio_files(a.audio), a.out)
    print(f"{stats}; codes in {a.out}")
    return stats


if __name__ == "__main__":
    main()

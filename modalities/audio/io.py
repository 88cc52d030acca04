"""Reading audio files for the model: soundfile decoding, downmix to mono, soxr resampling.

``load_audio(path, 24000)`` returns float32 mono samples in [-1, 1] at the model's rate, or
raises ``AudioReadError`` whose message names the file and what is wrong with it (corrupt
header, NaN samples, silence, too short). Readers of folders count these as skips instead of
dying (``modalities.stats.ReadStats``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from .masking import length_mask

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class AudioReadError(ValueError):
    """A file that cannot be used; ``reason`` is a short key for skip counters."""

    def __init__(self, path, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.reason = reason


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,): the mean of the channels."""
    return x if x.ndim == 1 else x.mean(axis=1)


def pcm_to_float(x: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Integer PCM (int8/uint8/int16/int32) -> float in [-1, 1]; float input is returned unchanged."""
    dtype = x.dtype
    if isinstance(x, Tensor):
        if x.is_floating_point():
            return x
        if dtype == torch.uint8:
            return (x.float() - 128.0) / 128.0
        return x.float() / float(-torch.iinfo(dtype).min)
    if np.issubdtype(dtype, np.floating):
        return x
    if dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    return x.astype(np.float32) / float(-np.iinfo(dtype).min)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality)."""
    if orig_sr == target_sr:
        return x
    return soxr.resample(x, orig_sr, target_sr, quality="HQ").astype(np.float32)


def load_audio(
    path: str | Path,
    sample_rate: int = 24000,
    min_samples: int = 400,
    allow_silence: bool = False,
    offset_seconds: float | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate``; raise ``AudioReadError`` on unusable files.

    ``offset_seconds``/``max_seconds`` read only a window (soundfile seeks; the whole file is
    not decoded). ``min_samples`` defaults to MERT's 400-sample receptive field.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(path, "missing", "no such file")
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            if offset_seconds:
                f.seek(min(int(offset_seconds * sr), f.frames))
            frames = -1 if max_seconds is None else int(max_seconds * sr)
            x = f.read(frames=frames, dtype="float32", always_2d=True)  # (frames, channels), any PCM width
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioReadError(path, "unreadable", f"cannot decode ({e}); is it a valid "
                             f"WAV/FLAC/OGG/MP3 file? re-encode it, e.g. with ffmpeg") from None
    x = to_mono(x)
    if x.size == 0:
        raise AudioReadError(path, "empty", "holds no samples at all (0 frames)")
    if not np.isfinite(x).all():
        raise AudioReadError(path, "nan", "contains NaN or infinite samples")
    if not allow_silence and not np.any(np.abs(x) > 1e-6):
        raise AudioReadError(path, "silent", "is silent (every sample is 0)")
    x = np.clip(resample(x, sr, sample_rate), -1.0, 1.0)  # float files may exceed full scale
    if len(x) < min_samples:
        raise AudioReadError(path, "too_short", f"has {len(x)} samples at {sample_rate} Hz, fewer than "
                             f"the {min_samples} the model needs for one frame")
    return np.ascontiguousarray(x, dtype=np.float32)


def normalize(x: Tensor, lengths: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance per clip over its real samples (MERT's processor, do_normalize=True).

    x: (B, S); lengths: (B,) real samples per clip (right padding stays 0).
    """
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], device=x.device)
    keep = length_mask(lengths, x.shape[1])  # (B, S)
    n = lengths.clamp(min=1)[:, None].to(x.dtype)
    mean = (x * keep).sum(1, keepdim=True) / n
    var = (((x - mean) * keep) ** 2).sum(1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * keep


def list_audio_files(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursive), sorted, by suffix."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither an audio file nor a folder of audio files")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())

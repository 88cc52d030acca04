"""Chest radiograph reading and preprocessing: DICOM (pydicom), PNG, JPEG -> a (1, H, W) float tensor.

DICOM: the modality LUT (rescale slope/intercept), then the VOI LUT or the stored window
(centre/width) when the file has one, then MONOCHROME1 is inverted so that bone is bright in
every image, then min-max to [0, 1]. Bad files raise ``ValueError`` naming the file; the data
sets built on these readers count them as skips instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: str | Path, voi: bool = True) -> np.ndarray:
    """A DICOM radiograph -> float32 (H, W) in [0, 1], bright = dense (bone)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable DICOM file ({e})") from None
    try:
        pixels = ds.pixel_array
    except (AttributeError, ValueError, RuntimeError, NotImplementedError) as e:
        raise ValueError(_pixel_error(path, ds, e)) from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # a multi-frame file: its first frame
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected one grayscale frame, got pixel array of shape {pixels.shape}")
    img = apply_modality_lut(pixels, ds).astype(np.float32)
    if voi and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        img = apply_voi_lut(img, ds).astype(np.float32)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        img = img.max() - img  # MONOCHROME1: low values are bright; invert to the usual look
    return _unit(img, path)


def _pixel_error(path: Path, ds, err: Exception) -> str:
    """Why the pixel data did not decode, in words a user can act on: a file cut short (the
    usual cause: an interrupted copy) is named as truncated / corrupt; only a compressed transfer
    syntax with no decoder installed gets the advice to install one."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return f"{path}: holds no pixel data (the file is truncated or corrupt, or not an image); re-copy it"
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(ts is not None and getattr(ts, "is_compressed", False))
    if not compressed:
        try:
            expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * \
                int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8
            have = len(ds.PixelData)
        except (AttributeError, TypeError, ValueError):
            expected = have = None
        if expected is not None and have < expected:
            return (f"{path}: the file is truncated or corrupt: its pixel data holds {have} of the {expected} bytes "
                    f"{int(ds.Rows)}x{int(ds.Columns)} pixels need; re-copy or re-download it")
        return f"{path}: the pixel data is corrupt ({msg}); re-copy or re-download the file"
    name = getattr(ts, "name", str(ts))
    if isinstance(err, NotImplementedError | RuntimeError) and any(w in msg.lower() for w in ("plugin", "handler", "missing")):
        return (f"{path}: no decoder for its {name} pixel data is installed ({msg}); "
                "`pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg` adds JPEG, JPEG-LS and JPEG 2000")
    return f"{path}: cannot decode its {name} pixel data ({msg}); the file is probably truncated or corrupt"


def read_bitmap(path: str | Path) -> np.ndarray:
    """PNG / JPEG (8- or 16-bit, grayscale or RGB) -> float32 (H, W) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(im, dtype=np.float32)
            else:
                arr = np.asarray(im.convert("L"), dtype=np.float32)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as e:  # neither an OSError nor a ValueError
        raise ValueError(f"{path}: refused, the image claims more pixels than PIL allows ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: not a readable PNG/JPEG image ({e})") from None
    return _unit(arr, path)


def read_image(path: str | Path) -> np.ndarray:
    """Any supported radiograph file -> float32 (H, W) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    return read_dicom(path) if is_dicom(path) else read_bitmap(path)


def _unit(img: np.ndarray, path: Path) -> np.ndarray:
    if img.size == 0 or min(img.shape) < 2:
        raise ValueError(f"{path}: image of shape {img.shape} is too small")
    if not np.isfinite(img).all():
        raise ValueError(f"{path}: image holds NaN or infinite values")
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


class CXRTransform:
    """(H, W) in [0, 1] -> (1, size, size): resize the short side to ``size``, centre-crop,
    normalise with ``mean``/``std``. ``random_crop`` (training) picks a crop of ``crop_scale`` of
    the short side at a random place before the resize."""

    def __init__(self, size: int = 224, mean: float = 0.5, std: float = 0.25, random_crop: bool = False,
                 crop_scale: float = 0.9):
        self.size, self.mean, self.std = size, mean, std
        self.random_crop, self.crop_scale = random_crop, crop_scale

    def __call__(self, img: np.ndarray | Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = torch.as_tensor(img, dtype=torch.float32)
        if x.dim() == 2:
            x = x[None]  # (1, H, W)
        _, H, W = x.shape
        if self.random_crop:
            s = max(2, int(min(H, W) * self.crop_scale))
            top = int(torch.randint(0, H - s + 1, (1,), generator=generator))
            left = int(torch.randint(0, W - s + 1, (1,), generator=generator))
            x = x[:, top : top + s, left : left + s]
            H = W = s
        scale = self.size / min(H, W)
        h, w = max(self.size, round(H * scale)), max(self.size, round(W * scale))
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        x = x[:, top : top + self.size, left : left + self.size]
        return (x - self.mean) / self.std  # (1, size, size)


def load_image_tensor(path: str | Path, transform: CXRTransform | None = None) -> Tensor:
    return (transform or CXRTransform())(read_image(path))

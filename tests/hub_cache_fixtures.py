"""Fake Hugging Face hub caches in the hub's exact layout (models--org--name/refs/main,
blobs/<sha256>, snapshots/<hash>/<file> -> ../../blobs/<sha256>) holding tiny random timm and
open_clip models, as ``timm/<name>`` and open_clip ``hf-hub:`` repos publish them."""

import hashlib
import json
from pathlib import Path

import torch

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
TIMM_MEAN, TIMM_STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]  # not timm's table values (0.5), so a test sees which is used
CLIP_MEAN, CLIP_STD = [0.7, 0.6, 0.5], [0.2, 0.3, 0.25]
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
             "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1}}


def write_hub_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """One repo in the HF hub cache layout; returns its snapshot folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(SNAPSHOT)
    snap = root / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snap


def st_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def timm_cache(cache: Path) -> torch.nn.Module:
    """timm/test_resnet.r160_in1k as the hub has it: config.json with pretrained_cfg + model.safetensors
    (classifier included); returns the model with those weights."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=1000).eval()
    cfg = {"architecture": "test_resnet", "num_classes": 1000, "num_features": model.num_features,
           "pretrained_cfg": {"tag": "r160_in1k", "input_size": [3, 64, 64], "interpolation": "bicubic",
                              "crop_pct": 0.95, "mean": TIMM_MEAN, "std": TIMM_STD, "num_classes": 1000,
                              "first_conv": "conv1.0", "classifier": "fc"}}
    write_hub_repo(cache, "timm/test_resnet.r160_in1k", {"config.json": json.dumps(cfg).encode(),
                                                          "model.safetensors": st_bytes(model.state_dict())})
    return model


def open_clip_cache(cache: Path) -> torch.nn.Module:
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.CLIP(**TINY_CLIP).eval()
    cfg = {"model_cfg": TINY_CLIP, "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic",
                                                      "resize_mode": "squash"}}
    write_hub_repo(cache, "org/tiny-clip", {"open_clip_config.json": json.dumps(cfg).encode(),
                                            "open_clip_model.safetensors": st_bytes(clip.state_dict())})
    return clip

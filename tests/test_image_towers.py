"""Pretrained image towers by published name from a local HF hub cache, offline, each with its own
preprocessing; the fake caches are written in the hub's exact layout (models--org--name/refs/main,
blobs/<sha256>, snapshots/<hash>/<file> -> ../../blobs/<sha256>) with random tiny weights."""

import pytest
import torch
from hub_cache_fixtures import (
    CLIP_MEAN,
    CLIP_STD,
    TIMM_MEAN,
    TIMM_STD,
    open_clip_cache,
    timm_cache,
    write_hub_repo,
)

from modalities.cxr.dual import DualTower, load_dual_tower, save_dual_tower
from modalities.cxr.towers import ImageTower, TextTower

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def gray(n=2, size=64):
    g = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))  # pixels in [0, 1]
    return g, (g - 0.5) / 0.25  # what CXRTransform (mean 0.5, std 0.25) hands the tower


def per_channel(g, mean, std):
    return (g.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", ["test_resnet.r160_in1k", "hf-hub:timm/test_resnet.r160_in1k"])
def test_timm_pretrained_name_loads_from_the_cache_with_its_own_mean_and_std(tmp_path, offline, name):
    ref = timm_cache(tmp_path)
    tower = ImageTower(pretrained=name, cache_dir=str(tmp_path)).eval()
    assert tower.preprocess["mean"] == TIMM_MEAN and tower.preprocess["std"] == TIMM_STD
    assert tower.preprocess["image_size"] == 64 and tower.transform().size == 64
    assert set(tower.meta["dropped"]) == {"fc.weight", "fc.bias"}
    g, normalised = gray()
    ref.reset_classifier(0)
    with torch.no_grad():
        assert (tower(normalised) - ref(per_channel(g, TIMM_MEAN, TIMM_STD))).abs().max() < 1e-5
    # timm's own hub loader reads the same cache: the layout is the hub's
    theirs = timm.create_model(name, pretrained=True, num_classes=0, cache_dir=str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.allclose(theirs(per_channel(g, TIMM_MEAN, TIMM_STD)), tower(normalised), atol=1e-5)


def test_open_clip_hf_hub_name_loads_the_visual_tower_with_its_preprocess_cfg(tmp_path, offline):
    ref = open_clip_cache(tmp_path)
    tower = ImageTower(pretrained="hf-hub:org/tiny-clip", source="open_clip", cache_dir=str(tmp_path)).eval()
    assert tower.preprocess["mean"] == CLIP_MEAN and tower.preprocess["image_size"] == 32
    assert "logit_scale" in tower.meta["dropped"] and tower.output_dim == 16
    g, normalised = gray(size=32)
    with torch.no_grad():
        assert (tower(normalised) - ref.encode_image(per_channel(g, CLIP_MEAN, CLIP_STD))).abs().max() < 1e-5
        theirs = open_clip.create_model("hf-hub:org/tiny-clip", cache_dir=str(tmp_path)).eval()
        assert torch.allclose(theirs.encode_image(per_channel(g, CLIP_MEAN, CLIP_STD)), tower(normalised), atol=1e-5)


def test_a_saved_dual_tower_with_a_pretrained_image_tower_rebuilds_without_the_cache(tmp_path, offline):
    import modalities

    open_clip_cache(tmp_path / "hub")
    text = TextTower(modalities.create_encoder("bert-tiny"))
    dual = DualTower(ImageTower(pretrained="hf-hub:org/tiny-clip", source="open_clip", cache_dir=str(tmp_path / "hub")),
                     text, embed_dim=8).eval()
    modalities.save_encoder(text.encoder, tmp_path / "enc")
    save_dual_tower(dual, tmp_path / "enc")
    import shutil

    shutil.rmtree(tmp_path / "hub")  # the export carries the weights and the preprocessing itself
    back = load_dual_tower(tmp_path / "enc")
    _, normalised = gray(size=32)
    with torch.no_grad():
        assert torch.allclose(back.encode_image(normalised), dual.encode_image(normalised), atol=1e-6)
    assert back.image_tower.preprocess["std"] == CLIP_STD


def test_a_name_missing_from_the_cache_says_what_to_download(tmp_path, offline):
    with pytest.raises(FileNotFoundError, match=r"'resnet18\.a1_in1k'.*hf download timm/resnet18\.a1_in1k"):
        ImageTower(pretrained="resnet18.a1_in1k", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no pretrained weights named 'resnet18.nope'"):
        ImageTower(pretrained="resnet18.nope", cache_dir=str(tmp_path))
    write_hub_repo(tmp_path, "org/broken", {"open_clip_config.json": b"{not json"})
    with pytest.raises(ValueError, match="open_clip_config.json is not valid JSON"):
        ImageTower(pretrained="hf-hub:org/broken", source="open_clip", cache_dir=str(tmp_path))

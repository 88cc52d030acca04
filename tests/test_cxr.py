"""CXR towers: report readers and styles, poolers, the LLM2Vec encoder (bidirectional mask,
LoRA merge, adapters, load_encoder), DICOM/PNG reading, image towers, the dual tower, bad input."""

import json

import numpy as np
import pytest
import torch
from cxr_fixtures import write_reports, write_tgz

import modalities
from modalities.cxr import (
    CXRTransform,
    DualTower,
    ImageTower,
    LLM2VecConfig,
    LLM2VecEncoder,
    TextTower,
    abbreviate,
    create_pooler,
    load_llm2vec,
    read_image,
    read_openi,
    reword_negations,
    tiny_decoder,
)
from modalities.stats import ReadStats
from tasks.data.fetch import default_cache_dir
from tasks.metrics.retrieval import dedup_gallery, retrieval_recall

DECODERS = ("llama", "qwen2", "mistral")


def llm2vec(model_type="llama", **kw) -> LLM2VecEncoder:
    torch.manual_seed(0)
    return LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(model_type), **kw)).eval()


def batch(lengths=(9, 5), T=None, seed=0):
    T = T or max(lengths)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 128, (len(lengths), T), generator=g)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


# --- readers and styles ---------------------------------------------------------------
def test_openi_reader_counts_skips_folder_and_tgz(tmp_path):
    folder = write_reports(tmp_path / "xml", n=10)
    for source in (folder, write_tgz(folder, tmp_path / "r.tgz")):
        stats = ReadStats(unit="reports")
        reps = list(read_openi(source, stats))
        assert len(reps) == 10 and stats.files == 12
        assert stats.skipped == {"no findings and no impression": 1, "not an OpenI report XML": 1}
        assert [r.uid for r in reps] == [f"CXR{k}" for k in range(1, 11)]  # numeric file order
        assert all(r.findings and r.impression for r in reps)
        assert reps[0].images == ["CXR1_IM-1"]


def test_openi_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tessera prepare cxr"):
        list(read_openi(tmp_path / "missing.tgz"))
    (tmp_path / "bad.tgz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a readable tar"):
        list(read_openi(tmp_path / "bad.tgz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable OpenI report"):
        list(read_openi(tmp_path / "empty"))


def test_huge_report_is_skipped(tmp_path):
    from cxr_fixtures import openi_xml

    folder = write_reports(tmp_path / "xml", n=3)
    (folder / "100.xml").write_text(openi_xml("CXR100", "word " * 10_000, "x"))
    stats = ReadStats()
    assert len(list(read_openi(folder, stats))) == 3
    assert stats.skipped["longer than 20000 characters"] == 1


@pytest.mark.skipif(not (default_cache_dir() / "cxr" / "NLMCXR_reports.tgz").is_file(),
                    reason="OpenI reports not in the cache; run tessera prepare cxr")
def test_real_openi_reports():
    stats = ReadStats()
    reps = list(read_openi(default_cache_dir() / "cxr" / "NLMCXR_reports.tgz", stats))
    assert stats.files == 3955 and len(reps) + sum(stats.skipped.values()) == 3955
    assert sum(bool(r.findings) for r in reps) > 3000 and sum(bool(r.impression) for r in reps) > 3800
    assert any("Cardiomegaly" in r.labels for r in reps)


def test_styles_are_deterministic_and_change_the_text():
    t = "No pleural effusion or pneumothorax. There is no focal consolidation. Heart size is normal."
    a, n = abbreviate(t), reword_negations(t)
    assert a == "No pl eff or PTX. There is no focal consol. Heart size is nl."
    assert n == "Negative for pleural effusion or pneumothorax. Focal consolidation is absent. Heart size is normal."
    assert abbreviate(t) == a and reword_negations(t) == n
    assert reword_negations("") == ""


# --- poolers --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mean", "max", "weighted_mean", "eos", "cls", "latent_attention"])
def test_poolers_ignore_padding(name):
    torch.manual_seed(0)
    pool = create_pooler(name, 16, num_latents=8, num_heads=4).eval()
    h = torch.randn(1, 5, 16)
    padded = torch.cat([h, torch.randn(1, 3, 16)], 1)  # garbage at pads
    m5, m8 = torch.ones(1, 5, dtype=torch.bool), torch.arange(8)[None] < 5
    torch.testing.assert_close(pool(h, m5), pool(padded, m8), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no real token"):
        pool(h, torch.zeros(1, 5, dtype=torch.bool))


def test_pooler_values():
    h = torch.arange(12.0).reshape(1, 3, 4)
    m = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(create_pooler("eos", 4)(h, m), h[:, 2])
    torch.testing.assert_close(create_pooler("weighted_mean", 4)(h, m), (h[0, 0] + 2 * h[0, 1] + 3 * h[0, 2])[None] / 6)
    torch.testing.assert_close(create_pooler("max", 4)(h, m), h[:, 2])
    torch.testing.assert_close(create_pooler("max", 4)(-h, m), -h[:, 0])
    with pytest.raises(ValueError, match="unknown pooling"):
        create_pooler("median", 4)


# --- LLM2Vec --------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", DECODERS)
def test_bidirectional_mask_lets_a_token_see_later_tokens(model_type):
    enc = llm2vec(model_type)
    ids, mask = batch((9,))
    later = ids.clone()
    later[0, 7] = (later[0, 7] + 1 - 5) % 123 + 5  # change a later token only
    h, h2 = enc(ids, mask).last_hidden_state, enc(later, mask).last_hidden_state
    assert (h[0, 0] - h2[0, 0]).abs().max() > 1e-4  # position 0 depends on position 7
    enc.set_bidirectional(False)
    h, h2 = enc(ids, mask).last_hidden_state, enc(later, mask).last_hidden_state
    torch.testing.assert_close(h[0, :7], h2[0, :7])  # causal: it does not


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_llm2vec_padding_invariant_and_backends_agree(attn):
    enc = llm2vec(attn_implementation=attn)
    ids, mask = batch((9, 5))
    z = enc.encode(ids, mask)
    alone = enc.encode(ids[1:, :5], mask[1:, :5])
    torch.testing.assert_close(z[1:], alone, atol=1e-5, rtol=1e-5)
    assert (enc(ids, mask).last_hidden_state[1, 5:] == 0).all()  # pads zeroed
    ref = llm2vec(attn_implementation="sdpa")
    torch.testing.assert_close(z, ref.encode(ids, mask), atol=1e-5, rtol=1e-5)


def test_causal_mode_matches_transformers(tmp_path):
    """bidirectional=False must reproduce the HF decoder's own hidden states (parity)."""
    from transformers import AutoModelForCausalLM

    enc = llm2vec(bidirectional=False)
    ids, mask = batch((9, 5))
    hf = AutoModelForCausalLM.from_config(enc.config.hf_config())
    hf.model.load_state_dict(enc.model.state_dict())
    hf.eval()
    ref = hf.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    ours = enc(ids, mask).last_hidden_state
    torch.testing.assert_close(ours[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1, :5], ref[1, :5], atol=1e-5, rtol=1e-5)


def test_lora_targets_merge_and_adapter_roundtrip(tmp_path):
    from transformers import AutoModelForCausalLM

    enc = llm2vec(lora_r=16)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("pooler") or n.startswith("lm_head") for n in trainable)
    lora_modules = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if "lora_" in n}
    assert lora_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    cfg = enc.model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha) == (16, 32)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter do something
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids, mask = batch((9, 5))
    unmerged = enc.encode(ids, mask)
    # the base decoder as an HF folder + the adapter in peft's layout = LLM2Vec's release format
    base = AutoModelForCausalLM.from_config(enc.config.hf_config())
    base.model.load_state_dict(enc.model.get_base_model().state_dict(), strict=False)  # base weights only
    for name, module in enc.model.get_base_model().named_modules():
        if hasattr(module, "base_layer"):
            base.model.get_submodule(name).load_state_dict(module.base_layer.state_dict())
    base.lm_head.load_state_dict(enc.lm_head.state_dict())
    base.save_pretrained(tmp_path / "base")
    enc.save_adapter(tmp_path / "adapter")
    keys = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert set(keys) == lora_modules
    for merge in (True, False):
        loaded = load_llm2vec(tmp_path / "base", [tmp_path / "adapter"], merge=merge).eval()
        assert loaded.has_lora is not merge
        torch.testing.assert_close(loaded.encode(ids, mask), unmerged, atol=1e-5, rtol=1e-5)
    enc.merge_lora()
    assert not enc.has_lora
    torch.testing.assert_close(enc.encode(ids, mask), unmerged, atol=1e-5, rtol=1e-5)
    # load_encoder reads an HF decoder folder + llm2vec.json naming the adapters
    (tmp_path / "base" / "llm2vec.json").write_text(json.dumps({"adapters": ["../adapter"], "pooling": "mean"}))
    via_hub = modalities.load_encoder(tmp_path / "base")
    torch.testing.assert_close(via_hub.encode(ids, mask), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lora", [0, 4])
def test_llm2vec_tessera_folder_roundtrip(tmp_path, lora):
    enc = llm2vec(lora_r=lora, pooling="latent_attention", num_latents=8, latent_heads=4)
    modalities.save_encoder(enc, tmp_path / "enc")
    back = modalities.load_encoder(tmp_path / "enc")
    ids, mask = batch((9, 5))
    torch.testing.assert_close(back.encode(ids, mask), enc.encode(ids, mask))


def test_llm2vec_bad_input():
    enc = llm2vec()
    with pytest.raises(ValueError, match="outside the decoder's vocabulary"):
        enc(torch.tensor([[1, 500]]))
    with pytest.raises(ValueError, match="integer tensor"):
        enc(torch.randn(1, 4))
    with pytest.raises(ValueError, match="model_type"):
        LLM2VecConfig(decoder={})
    with pytest.raises(ValueError, match="attn_implementation"):
        LLM2VecConfig(decoder=tiny_decoder(), attn_implementation="flash_attention_2")


def test_text_tower_on_the_shared_backbone():
    tower = TextTower(modalities.create_encoder("bert-tiny", vocab_size=128, num_layers=1), "mean").eval()
    ids, mask = batch((9, 5))
    z = tower.encode(ids, mask)
    assert z.shape == (2, 128)
    torch.testing.assert_close(z[1:], tower.encode(ids[1:, :5], mask[1:, :5]), atol=1e-5, rtol=1e-5)


# --- images ---------------------------------------------------------------------------
def _dicom(path, pixels, photometric="MONOCHROME2", window=None):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_monochrome1_is_inverted_and_windowed(tmp_path):
    px = np.tile(np.linspace(0, 4000, 32), (32, 1))  # dark -> bright left to right
    m2 = read_image(_dicom(tmp_path / "a.dcm", px))
    m1 = read_image(_dicom(tmp_path / "b.dcm", px, "MONOCHROME1"))
    assert m2[:, 0].mean() < 0.01 and m2[:, -1].mean() > 0.99
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)  # MONOCHROME1: low values are bright
    w = read_image(_dicom(tmp_path / "c.dcm", px, window=(1000, 1000)))  # window 500..1500
    assert (w[:, px[0] <= 500] < 0.01).all() and (w[:, px[0] >= 1500] > 0.99).all()


def test_png_jpeg_and_transform(tmp_path):
    from PIL import Image

    arr = (np.random.default_rng(0).random((40, 60)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    Image.fromarray(arr).convert("RGB").save(tmp_path / "x.jpg")
    Image.fromarray(arr.astype(np.uint16) * 200).save(tmp_path / "x16.png")
    for name in ("x.png", "x.jpg", "x16.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (40, 60) and img.min() == 0 and img.max() == 1
    x = CXRTransform(32)(read_image(tmp_path / "x.png"))
    assert x.shape == (1, 32, 32) and torch.isfinite(x).all()


def test_bad_images(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    with pytest.raises(ValueError, match="bad.dcm"):
        read_image(tmp_path / "bad.dcm")
    with pytest.raises(ValueError, match="bad.png: not a readable PNG/JPEG"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")


@pytest.mark.skipif(not (default_cache_dir() / "cxr" / "RG1_UNCR.dcm").is_file(),
                    reason="RG1_UNCR.dcm not in the cache; run tessera prepare cxr")
def test_real_radiograph_rg1_uncr():
    img = read_image(default_cache_dir() / "cxr" / "RG1_UNCR.dcm")  # PA chest, MONOCHROME1
    assert img.shape == (1955, 1841)
    H, W = img.shape
    corner = img[: H // 10, : W // 10].mean()  # air outside the body: dark after inversion
    spine = img[H // 2 - 50 : H // 2 + 50, W // 2 - 50 : W // 2 + 50].mean()  # mediastinum: bright
    assert corner < 0.4 < 0.7 < spine


# --- towers and the dual tower -------------------------------------------------------------
def test_image_tower_by_name_and_bad_input():
    tower = ImageTower("resnet10t")
    assert tower(torch.randn(2, 1, 32, 32)).shape == (2, tower.output_dim)
    with pytest.raises(ValueError, match="grayscale"):
        tower(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="timm has no model"):
        ImageTower("no-such-net")
    with pytest.raises(FileNotFoundError):
        ImageTower("resnet10t", init_from="/nope.safetensors")


def test_timm_weights_from_a_local_safetensors_file(tmp_path):
    """An ImageNet-shaped timm checkpoint (3-channel stem, 1000-way classifier) loads into the
    grayscale tower: timm sums the stem over the colour channels and drops the classifier."""
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet10t", pretrained=False)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, tmp_path / "resnet10t.safetensors")
    tower = ImageTower("resnet10t", init_from=str(tmp_path / "resnet10t.safetensors"))
    got = tower.model.state_dict()
    stem = next(k for k in got if got[k].dim() == 4)  # the first convolution
    assert got[stem].shape[1] == 1 and torch.allclose(got[stem], state[stem].sum(1, keepdim=True), atol=1e-6)
    assert torch.equal(got["layer4.0.conv2.weight"], state["layer4.0.conv2.weight"])
    assert not any(k.startswith("fc.") for k in got)
    assert not torch.equal(ImageTower("resnet10t").model.state_dict()["layer4.0.conv2.weight"], state["layer4.0.conv2.weight"])


@pytest.mark.slow
def test_open_clip_visual_tower_random_and_from_a_local_file(tmp_path):
    import open_clip

    tower = ImageTower("RN50", source="open_clip", image_size=64)
    assert tower(torch.randn(2, 1, 64, 64)).shape == (2, tower.output_dim) and tower.output_dim == 1024
    clip = open_clip.create_model("RN50", force_image_size=64)
    torch.save({"state_dict": clip.state_dict()}, tmp_path / "rn50.pt")  # open_clip's checkpoint layout
    loaded = ImageTower("RN50", source="open_clip", init_from=str(tmp_path / "rn50.pt"), image_size=64)
    for k, v in clip.visual.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    x = torch.randn(1, 1, 64, 64)
    clip.visual.eval(), loaded.eval()
    assert torch.allclose(loaded(x), clip.visual(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_dual_tower_frozen_text_and_losses():
    from open_clip.loss import ClipLoss, SigLipLoss

    text = llm2vec()
    dual = DualTower(ImageTower("resnet10t"), text, embed_dim=16, init_logit_bias=-10.0)
    before = {k: v.clone() for k, v in text.state_dict().items()}
    opt = torch.optim.AdamW([p for p in dual.parameters() if p.requires_grad], lr=1e-3)
    ids, mask = batch((9, 5, 7, 3))
    images = torch.randn(4, 1, 32, 32)
    for loss_fn in (ClipLoss(), SigLipLoss()):
        out = dual.train()(images, ids, mask)
        assert out["image_features"].norm(dim=-1).allclose(torch.ones(4))
        loss = loss_fn(**out) if isinstance(loss_fn, SigLipLoss) else loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(before[k], v) for k, v in text.state_dict().items())  # frozen text tower
    assert not text.training  # no dropout in a frozen tower


# --- metrics --------------------------------------------------------------------------
def test_retrieval_recall_and_dedup():
    reps, target = dedup_gallery(["No acute disease.", "Effusion.", "no acute disease"],
                                 key=lambda t: t.lower().strip("."))
    assert reps == [0, 1] and target.tolist() == [0, 1, 0]
    g = torch.eye(3)
    q = torch.tensor([[1.0, 0, 0], [0, 0.2, 1.0], [0, 1.0, 0]])
    r = retrieval_recall(q, g, torch.tensor([0, 1, 1]), ks=(1, 2))
    assert r["recall@1"] == pytest.approx(2 / 3) and r["recall@2"] == 1.0
    const = retrieval_recall(torch.ones(4, 3), torch.randn(10, 3), torch.zeros(4, dtype=torch.long), ks=(1,))
    assert const["recall@1"] == 0.0  # ties count half: a constant model gets no free hit


def test_non_english_and_empty_text_encode():
    from modalities.text import train_wordpiece

    tok = train_wordpiece(["the heart is normal", "no effusion"] * 20, 64)
    enc = llm2vec()
    for text in ("心脏大小正常。", "", "Le cœur est de taille normale."):
        ids = torch.tensor([tok.encode(text).ids])  # unknown words become [UNK]; [CLS] [SEP] always there
        assert ids.shape[1] >= 2
        assert torch.isfinite(enc.encode(ids)).all()


def test_mimic_and_chexpert_layouts(tmp_path):
    from modalities.cxr import read_chexpert_csv, read_mimic_cxr

    study = tmp_path / "mimic" / "files" / "p10" / "p10000032" / "s50414267"
    study.mkdir(parents=True)
    (study / "img1.jpg").write_bytes(b"")
    (study.parent / "s50414267.txt").write_text(
        "FINAL REPORT\n EXAMINATION: CHEST\n\n FINDINGS: No focal consolidation.\n Heart size normal.\n\n"
        " IMPRESSION: No acute process.\n")
    (study.parent / "s50414268.txt").write_text("FINAL REPORT\n WET READ: nothing to see\n")  # no sections
    (study.parent / "s50414269.txt").write_bytes(b"\xff\xfe\xfa")  # not UTF-8
    stats = ReadStats()
    reps = list(read_mimic_cxr(tmp_path / "mimic", stats))
    assert len(reps) == 1 and reps[0].findings == "No focal consolidation. Heart size normal."
    assert reps[0].impression == "No acute process." and reps[0].images == ["files/p10/p10000032/s50414267/img1.jpg"]
    assert stats.skipped == {"no findings and no impression": 1, "unreadable report file": 1}
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("Path,Sex,No Finding,Cardiomegaly,Pleural Effusion\n"
                        "CheXpert-v1.0/train/patient1/study1/view1_frontal.jpg,F,,1.0,-1.0\n"
                        "CheXpert-v1.0/train/patient2/study1/view1_frontal.jpg,M,1.0,,x\n")
    stats = ReadStats()
    rows = list(read_chexpert_csv(csv_path, stats))
    assert [r.mesh for r in rows] == [["Cardiomegaly"], ["No Finding"]]  # -1 (uncertain) is not positive
    assert stats.skipped == {"non-numeric Pleural Effusion": 1}
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'Path' column"):
        list(read_chexpert_csv(tmp_path / "bad.csv"))

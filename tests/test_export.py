"""One way out of a run: every fit leaves <log dir>/encoder; `tessera export` rebuilds the same folder
from the run (config.yaml + checkpoint read with weights_only=True); `--ckpt_path last` resumes the
run's own newest checkpoint; bad inputs are one line and exit status 2."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks.cli import find_last_checkpoint
from tasks.cli import main as tessera

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "text" / "tiny.yaml"


def fit_args(corpus: Path, tmp: Path, root: Path, steps: int) -> list[str]:
    return ["fit", "--config", str(TINY), "--data.init_args.corpus", str(corpus),
            "--data.init_args.cache_dir", str(tmp / "cache"), "--data.init_args.vocab_size", "300",
            "--data.init_args.max_length", "32", "--data.init_args.batch_size", "8",
            "--data.init_args.val_fraction", "0.2", "--trainer.max_steps", str(steps),
            "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(root)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import random

    tmp = tmp_path_factory.mktemp("export")
    corpus = tmp / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    words = "the model reads a sequence of tokens and predicts the masked ones from their context".split()
    for k in range(8):
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) for _ in range(40)]
        (corpus / f"part{k}.txt").write_text("\n\n".join(docs) + "\n")
    root = tmp / "run"
    assert tessera(fit_args(corpus, tmp, root, 4)) == 0
    return {"tmp": tmp, "corpus": corpus, "root": root, "log": root / "lightning_logs" / "version_0"}


def test_every_fit_writes_a_self_contained_encoder_folder(run, tmp_path):
    enc = run["log"] / "encoder"
    meta = json.loads((enc / "config.json").read_text())["meta"]
    assert meta["modality"] == "text" and meta["step"] == 4
    assert (enc / "tokenizer.json").is_file()
    lines = tmp_path / "lines.txt"
    lines.write_text("the model reads tokens\npredicts the masked ones\n")
    assert tessera(["embed", "--encoder", str(enc), str(lines), "--out", str(tmp_path / "emb"), "--quiet"]) == 0
    assert load_file(tmp_path / "emb" / "embeddings.safetensors")["embeddings"].shape == (2, 128)


@pytest.mark.parametrize("src", ["root", "log", "ckpt"])
def test_export_from_a_run_equals_the_folder_fit_wrote(run, tmp_path, src):
    path = {"root": run["root"], "log": run["log"], "ckpt": run["log"] / "checkpoints" / "last.ckpt"}[src]
    assert tessera(["export", str(path), str(tmp_path / "out")]) == 0
    ours, fits = load_file(tmp_path / "out" / "model.safetensors"), load_file(run["log"] / "encoder" / "model.safetensors")
    assert ours.keys() == fits.keys() and all(torch.equal(ours[k], fits[k]) for k in ours)
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (run["log"] / "encoder" / "tokenizer.json").read_bytes()


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PAYLOAD_RAN",))


def test_export_never_unpickles_a_checkpoint(run, tmp_path, capsys):
    import shutil

    log = tmp_path / "log"
    shutil.copytree(run["log"], log)
    flag = Path(__file__).parent / "PAYLOAD_RAN"
    flag.unlink(missing_ok=True)
    with open(log / "checkpoints" / "last.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}, "x": Payload()}, f)
    assert tessera(["export", str(log), str(tmp_path / "out")]) == 2
    assert not flag.exists(), "the checkpoint's payload ran"
    assert "never unpickled" in capsys.readouterr().err


def test_export_bad_inputs_are_one_line_and_status_2(run, tmp_path, capsys):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    shutil.copytree(run["log"], broken)
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"")
    for argv, expected in (
        (["export", str(tmp_path / "nope"), str(tmp_path / "o")], "does not exist"),
        (["export", str(empty), str(tmp_path / "o")], "holds no config.yaml"),
        (["export", str(broken), str(tmp_path / "o")], "last.ckpt is not a readable checkpoint"),
        (["export", str(run["log"]), str(tmp_path / "o"), "--bogus"], "unrecognized arguments"),
    ):
        assert tessera(argv) == 2
        err = capsys.readouterr().err
        assert expected in err.strip().splitlines()[-1] and "Traceback" not in err, err


@pytest.mark.slow
def test_ckpt_path_last_resumes_the_runs_own_version(run, tmp_path):
    root = tmp_path / "run"
    assert tessera(fit_args(run["corpus"], run["tmp"], root, 4)) == 0
    assert find_last_checkpoint(root) == root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert tessera([*fit_args(run["corpus"], run["tmp"], root, 6), "--ckpt_path", "last"]) == 0
    assert not (root / "lightning_logs" / "version_1").exists()  # continued in version_0, no new version
    ckpt = torch.load(root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    metrics = json.loads((root / "lightning_logs" / "version_0" / "metrics.json").read_text())
    assert [r["step"] for r in metrics["history"]["val"]] == [2, 4, 6]  # the history survived the resume


def test_ckpt_path_last_without_a_checkpoint_says_so(tmp_path, capsys):
    assert tessera([*fit_args(tmp_path, tmp_path, tmp_path / "fresh", 2), "--ckpt_path", "last"]) == 2
    assert "no last.ckpt under" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta"])
def test_hf_export_reloads_in_transformers_with_our_hidden_states(tmp_path, kind):
    import transformers

    import modalities

    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=64, type_vocab_size=2)
    torch.manual_seed(0)
    if kind == "bert":
        src = transformers.BertModel(transformers.BertConfig(**common))
    elif kind == "roberta":
        src = transformers.RobertaModel(transformers.RobertaConfig(pad_token_id=1, **common))
    else:
        src = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(pad_token_id=1, **common))
    src.eval().save_pretrained(tmp_path / "src")
    assert tessera(["import", str(tmp_path / "src"), str(tmp_path / "ours")]) == 0
    assert tessera(["export", str(tmp_path / "ours"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    back = transformers.AutoModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).eval()
    enc = modalities.load_encoder(tmp_path / "ours")
    mask = torch.arange(12)[None] < torch.tensor([12, 5, 9])[:, None]
    ids = torch.randint(3, 99, mask.shape).masked_fill(~mask, 1 if kind != "bert" else 0)
    with torch.no_grad():
        ours = enc(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        theirs = back(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    for a, b in zip(ours, theirs, strict=True):
        assert (a - b)[mask].abs().max() < 1e-5


def test_sentence_transformers_export_encodes_as_tessera_embed(run, tmp_path):
    from sentence_transformers import SentenceTransformer

    lines = tmp_path / "lines.txt"
    texts = ["the model reads tokens", "predicts the masked ones from their context", "a sequence"]
    lines.write_text("\n".join(texts) + "\n")
    assert tessera(["export", str(run["root"]), str(tmp_path / "st"), "--format", "sentence-transformers"]) == 0
    assert tessera(["embed", "--encoder", str(run["log"] / "encoder"), str(lines), "--out", str(tmp_path / "emb"),
                    "--quiet"]) == 0
    ours = load_file(tmp_path / "emb" / "embeddings.safetensors")["embeddings"]
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    theirs = st.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_an_export_format_that_cannot_hold_the_encoder_says_why(tmp_path, capsys):
    import modalities

    enc = modalities.create_encoder("bert-tiny", position="alibi", norm="pre")
    modalities.save_encoder(enc, tmp_path / "alibi")
    assert tessera(["export", str(tmp_path / "alibi"), str(tmp_path / "hf"), "--format", "hf"]) == 2
    err = capsys.readouterr().err
    assert "not BERT-shaped" in err and "position='alibi'" in err



@pytest.mark.parametrize(("layout", "convs"), [("mert-v1-95m", {}),
                                              ("mert-v1-330m", {"feat_extract_norm": "layer", "conv_bias": True})],
                         ids=["95m-post-ln", "pre-ln-layernorm-convs"])
def test_mert_export_reloads_in_transformers_hubert_with_our_hidden_states(tmp_path, layout, convs):
    import transformers

    import modalities
    from modalities.hub import check_parity

    torch.manual_seed(0)
    enc = modalities.create_encoder(layout, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                                    conv_dim=[16] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **convs)
    with torch.no_grad():  # norms away from their init so that a misplaced one shows
        for name, p in enc.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    modalities.save_encoder(enc.eval(), tmp_path / "ours")
    assert tessera(["export", str(tmp_path / "ours"), str(tmp_path / "mert"), "--format", "mert"]) == 0
    back = transformers.AutoModel.from_pretrained(tmp_path / "mert")
    assert type(back).__name__ == "HubertModel"
    processor = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "mert")
    assert processor.sampling_rate == 24000 and processor.do_normalize
    assert check_parity(tmp_path / "mert", enc.eval()) < 1e-5  # every hidden state, two clips, HubertModel
    # and back through our importer: the same encoder
    again = modalities.load_encoder(tmp_path / "mert")
    assert again.config.sample_rate == 24000 and again.config.norm == enc.config.norm
    wav = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.allclose(again(input_values=wav).last_hidden_state, enc(input_values=wav).last_hidden_state, atol=1e-5)


def test_mert_export_takes_a_foreign_hubert_folder_as_it_is(tmp_path):
    import transformers

    import modalities
    from modalities.hub import check_parity

    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    transformers.HubertModel(cfg).eval().save_pretrained(tmp_path / "hubert")
    assert tessera(["export", str(tmp_path / "hubert"), str(tmp_path / "mert"), "--format", "mert"]) == 0
    assert json.loads((tmp_path / "mert" / "preprocessor_config.json").read_text())["sampling_rate"] == 16000
    assert check_parity(tmp_path / "mert", modalities.load_encoder(tmp_path / "hubert")) < 1e-5

def test_mert_export_of_a_token_encoder_says_which_formats_fit(tmp_path, capsys):
    import modalities

    modalities.save_encoder(modalities.create_encoder("bert-tiny"), tmp_path / "bert")
    assert tessera(["export", str(tmp_path / "bert"), str(tmp_path / "out"), "--format", "mert"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a TokenEncoder" in err[0] and "--format hf" in err[0]


def tiny_dual(folder: Path, image_tower, adapter_layers: int = 0, logit_bias: float | None = -10.0):
    """A dual tower (bert-tiny text tower, mean pooled) saved as a CLIPSystem run's encoder folder."""
    import modalities
    from modalities.cxr.dual import DualTower, save_dual_tower
    from modalities.cxr.towers import TextTower

    torch.manual_seed(0)
    text = TextTower(modalities.create_encoder("bert-tiny", max_position_embeddings=64), pooling="mean")
    dual = DualTower(image_tower, text, embed_dim=8, freeze_text=False, adapter_layers=adapter_layers,
                     init_logit_bias=logit_bias).eval()
    modalities.save_encoder(text.encoder, folder, meta={"pooling": "mean"})
    save_dual_tower(dual, folder)
    return dual


def open_clip_inputs(size: int):
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(2, 1, size, size, generator=g)  # grey images in [0, 1]
    mask = torch.arange(10)[None] < torch.tensor([10, 6])[:, None]
    ids = torch.randint(5, 1000, mask.shape, generator=g).masked_fill(~mask, 0)  # bert-tiny pads with 0
    return pixels, ids, mask


def test_open_clip_export_of_a_timm_dual_tower_reloads_in_open_clip(tmp_path):
    import open_clip

    from modalities.cxr.towers import ImageTower

    dual = tiny_dual(tmp_path / "enc", ImageTower("test_resnet", image_size=32))
    assert tessera(["export", str(tmp_path / "enc"), str(tmp_path / "oc"), "--format", "open_clip"]) == 0
    clip = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    pre = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["preprocess_cfg"]
    assert pre["mean"] == [0.5] * 3 and pre["std"] == [0.25] * 3
    pixels, ids, mask = open_clip_inputs(32)
    normalised = (pixels - 0.5) / 0.25
    with torch.no_grad():  # open_clip sees the grey image repeated over RGB, normalised per channel
        assert (clip.encode_image(normalised.expand(-1, 3, -1, -1), normalize=True) - dual.encode_image(normalised)).abs().max() < 1e-5
        assert (clip.encode_text(ids, normalize=True) - dual.encode_text(ids, mask)).abs().max() < 1e-5
    assert clip.logit_scale.item() == dual.logit_scale.item() and clip.logit_bias.item() == -10.0


def test_open_clip_export_folds_our_projection_into_a_pretrained_open_clip_tower(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import open_clip
    from hub_cache_fixtures import CLIP_MEAN, CLIP_STD, open_clip_cache

    from modalities.cxr.towers import ImageTower

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    open_clip_cache(tmp_path / "hub")
    tower = ImageTower(pretrained="hf-hub:org/tiny-clip", source="open_clip", cache_dir=str(tmp_path / "hub"))
    dual = tiny_dual(tmp_path / "enc", tower, logit_bias=None)
    assert tessera(["export", str(tmp_path / "enc"), str(tmp_path / "oc"), "--format", "open_clip"]) == 0
    clip = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    assert json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["preprocess_cfg"]["mean"] == CLIP_MEAN
    pixels, ids, mask = open_clip_inputs(32)
    rgb = (pixels.expand(-1, 3, -1, -1) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    with torch.no_grad():
        assert (clip.encode_image(rgb, normalize=True) - dual.encode_image((pixels - 0.5) / 0.25)).abs().max() < 1e-5
        assert (clip.encode_text(ids, normalize=True) - dual.encode_text(ids, mask)).abs().max() < 1e-5


def test_open_clip_export_refuses_what_open_clip_cannot_hold_in_one_line(tmp_path, capsys):
    import modalities
    from modalities.cxr.towers import ImageTower

    tiny_dual(tmp_path / "adapter", ImageTower("test_resnet", image_size=32), adapter_layers=1)
    modalities.save_encoder(modalities.create_encoder("bert-tiny"), tmp_path / "plain")
    for src, expected in (("adapter", "adapter_layers: 0"), ("plain", "has no dual_tower/config.json")):
        assert tessera(["export", str(tmp_path / src), str(tmp_path / "out"), "--format", "open_clip"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0]

@pytest.mark.slow
def test_a_sigkilled_fit_resumes_with_last_to_the_uninterrupted_weights(run, tmp_path):
    """A real `tessera fit` process, logger on, dropout on (the tiny config's 0.1), killed with SIGKILL
    after step 4 (last checkpoint at step 3), resumed with `--ckpt_path last`: same weights as a run
    that was never interrupted, bit for bit."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    assert cfg["model"]["init_args"]["encoder"]["init_args"]["config"].get("hidden_dropout", 0.1) > 0
    cfg["trainer"]["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                    "init_args": {"every_n_train_steps": 3, "save_last": True}}]
    cfg["trainer"]["num_sanity_val_steps"] = 2
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # the test's KillAt callback

    def fit(root, *extra):
        argv = fit_args(run["corpus"], run["tmp"], root, 6)
        argv[argv.index(str(TINY))] = str(config)
        return subprocess.run([sys.executable, "-m", "tasks.cli", *argv, "--trainer.val_check_interval", "5", *extra],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    killed = fit(tmp_path / "a", "--trainer.callbacks+", "conftest.KillAt", "--trainer.callbacks.step", "4")
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = tmp_path / "a" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    resumed = fit(tmp_path / "a", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (tmp_path / "a" / "lightning_logs" / "version_1").exists()
    straight = fit(tmp_path / "b")
    assert straight.returncode == 0, straight.stderr[-2000:]
    a = torch.load(last, weights_only=True)
    b = torch.load(tmp_path / "b" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    differ = [k for k in b["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:3]}"

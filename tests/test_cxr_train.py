"""CXR training: data modules on test-written OpenI reports, MNTP's shift, SimCSE / supervised
InfoNCE, CLIP/SigLIP through `tessera fit`, export and hand-over between stages, evaluation."""

import json
from pathlib import Path  # noqa: I001

import numpy as np
import pytest
import torch
from cxr_fixtures import write_reports

import modalities
from modalities.cxr import LLM2VecConfig, LLM2VecEncoder, tiny_decoder
from modalities.cxr.synthetic import finding_labels, synth_radiograph
from tasks.cli import main as tessera
from tasks.cxr import CausalLMSystem, MNTPSystem, info_nce
from tasks.data.collate import IGNORE
from tasks.data.cxr import ImageReportDataModule, ReportDataModule

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reports(tmp_path):
    return write_reports(tmp_path / "openi", n=120)


def dm_args(reports, tmp_path, **kw):
    return dict(reports=str(reports), cache_dir=str(tmp_path / "cache"), vocab_size=200, max_length=48, batch_size=8, **kw)


def test_report_data_module_modes(reports, tmp_path):
    dm = ReportDataModule(mode="masked", **dm_args(reports, tmp_path))
    dm.setup()
    assert dm.stats["reports"] == 120 and dm.stats["skipped"] == {"no findings and no impression": 1,
                                                                 "not an OpenI report XML": 1}
    b = next(iter(dm.train_dataloader()))
    chosen = b["labels"] != IGNORE
    assert chosen.any(1).all() and not chosen[~b["attention_mask"]].any()
    assert not chosen[:, 0].any()  # [CLS] is never a target
    b2 = next(iter(dm.val_dataloader()))
    assert torch.equal(b2["labels"], next(iter(dm.val_dataloader()))["labels"])  # fixed validation masks
    dm = ReportDataModule(mode="plain", **dm_args(reports, tmp_path))
    dm.setup()
    assert set(next(iter(dm.train_dataloader()))) == {"input_ids", "attention_mask"}
    v = next(iter(dm.val_dataloader()))
    assert {"pair_ids", "pair_mask", "group"} <= set(v)
    dm = ReportDataModule(mode="causal", **dm_args(reports, tmp_path))
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert torch.equal(b["labels"][b["attention_mask"]], b["input_ids"][b["attention_mask"]])  # nothing masked
    assert (b["labels"][~b["attention_mask"]] == IGNORE).all() and (~b["attention_mask"]).any()
    with pytest.raises(ValueError, match="mode"):
        ReportDataModule(mode="nope")


def test_prepare_data_builds_the_tokenizer_once_for_every_rank(reports, tmp_path):
    """Under DDP only local rank 0 runs prepare_data; the other ranks' setup must find the WordPiece
    whole in the cache, never train (and write) it themselves."""
    dm = ImageReportDataModule(**dm_args(reports, tmp_path))
    dm.prepare_data()
    written = list((tmp_path / "cache" / "cxr").glob("wordpiece-*"))
    assert len(written) == 1 and written[0].suffix == ".json"  # no partial file left beside it
    stamp = written[0].stat().st_mtime_ns
    other_rank = ImageReportDataModule(**dm_args(reports, tmp_path))
    other_rank.setup()  # no prepare_data here, as on rank 1
    assert other_rank.tokenizer_file == written[0] and written[0].stat().st_mtime_ns == stamp


def test_causal_lm_system_is_causal_and_predicts_the_next_token():
    torch.manual_seed(0)
    enc = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder())).eval()
    system = CausalLMSystem(enc)
    assert enc.config.bidirectional is False
    ids = torch.randint(5, 128, (2, 8))
    mask = torch.ones_like(ids, dtype=torch.bool)
    out = system(ids, mask, ids)
    logits = enc.lm_logits(enc(ids, mask).last_hidden_state[:, :-1])  # (2, 7, V)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out["loss"], expected)
    changed = ids.clone()
    changed[:, -1] = 7  # a later token cannot change an earlier output
    h1, h2 = enc(ids, mask).last_hidden_state, enc(changed, mask).last_hidden_state
    torch.testing.assert_close(h1[:, :-1], h2[:, :-1])


def test_mntp_predicts_token_i_from_position_i_minus_1():
    torch.manual_seed(0)
    enc = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder())).eval()
    system = MNTPSystem(enc)
    ids = torch.randint(5, 128, (1, 8))
    labels = torch.full_like(ids, IGNORE)
    labels[0, 4] = ids[0, 4]
    masked = ids.clone()
    masked[0, 4] = 4  # [MASK]
    mask = torch.ones_like(ids, dtype=torch.bool)
    out = system(masked, mask, labels)
    h = enc(masked, mask).last_hidden_state
    expected = torch.nn.functional.cross_entropy(enc.lm_logits(h[0, 3:4]), ids[0, 4:5])
    torch.testing.assert_close(out["loss"], expected)
    assert out["masked"] == 1


def test_info_nce_masks_same_group_negatives():
    a = torch.eye(3)
    b = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1]])  # rows 0 and 1 of b nearly equal
    plain = info_nce(a, b, 0.1)
    grouped = info_nce(a, b, 0.1, torch.tensor([0, 0, 1]))  # 0 and 1 share an impression
    assert grouped < plain


def test_init_from_copies_the_previous_stage(tmp_path):
    torch.manual_seed(0)
    first = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(), lora_r=4))
    modalities.save_encoder(first, tmp_path / "mntp")
    second = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(), pooling="eos", lora_r=8), init_from=str(tmp_path / "mntp"))
    first.merge_lora()
    base = second.base()
    for name, p in first.model.named_parameters():
        q = base.get_parameter(name) if "proj" not in name else base.get_submodule(name.rsplit(".", 1)[0]).base_layer.weight
        assert torch.equal(p, q), name


def test_synthetic_images_follow_the_findings():
    assert finding_labels("No pleural effusion. Mild cardiomegaly.") == {
        "cardiomegaly": True, "effusion": False, "pneumothorax": False, "nodule": False, "opacity": False}
    normal = synth_radiograph("a", "The lungs are clear.", 64)
    big = synth_radiograph("a", "Cardiomegaly.", 64)
    assert normal.shape == (64, 64) and normal.dtype == np.float32
    assert np.array_equal(normal, synth_radiograph("a", "The lungs are clear.", 64))  # deterministic
    assert (big > 0.55).sum() > (normal > 0.55).sum()  # a wider heart


def test_image_report_module_counts_missing_and_corrupt_images(reports, tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    for k in range(1, 121):
        if k % 4 == 0:
            continue  # missing file
        path = root / f"CXR{k}_IM-1.png"
        if k % 5 == 0:
            path.write_bytes(b"corrupt")
        else:
            Image.fromarray(np.full((20, 20), k, np.uint8)).save(path)
    dm = ImageReportDataModule(image_root=str(root), image_size=16, **dm_args(reports, tmp_path))
    dm.setup()
    from modalities.cxr import split_of

    expected = sum(1 for k in range(4, 121, 4) if split_of(f"CXR{k}") != "test")  # the test split is not loaded
    assert dm.stats["skipped_missing_image"] == expected > 0
    dm.num_workers = 1  # the count must travel back from a worker process in the batch
    batches = [dm.count_bad_images(b) for b in list(dm.val_dataloader()) + list(dm.train_dataloader())]
    n = sum(len(b["images"]) for b in batches if b)
    bad = sum(dm.bad_images.values())
    corrupt = [k for k in range(1, 121) if k % 5 == 0 and k % 4 != 0]
    for split in ("train", "val"):
        assert dm.bad_images[split] == sum(split_of(f"CXR{k}") == split for k in corrupt)
    assert bad > 0 and n + bad == dm.stats["train_pairs"] + dm.stats["val_pairs"]


@pytest.mark.slow
def test_one_undecodable_validation_image_is_dropped_counted_and_printed(reports, tmp_path, capsys):
    from PIL import Image

    from modalities.cxr import split_of

    root = tmp_path / "images"
    root.mkdir()
    val = [k for k in range(1, 121) if split_of(f"CXR{k}") == "val"]
    for k in range(1, 121):
        path = root / f"CXR{k}_IM-1.png"
        if k == val[0]:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut short")  # a PNG header and nothing else
        else:
            Image.fromarray(np.full((20, 20), k, np.uint8)).save(path)
    assert _cli("clip_tiny.yaml", tmp_path / "run", reports, tmp_path, "--data.init_args.image_root", str(root),
                "--data.init_args.image_size", "32", "--trainer.limit_val_batches", "1",
                "--trainer.num_sanity_val_steps", "0") == 0
    out = capsys.readouterr().out
    assert "dropped 1 image(s) that did not decode (val 1)" in out
    final = json.loads((tmp_path / "run" / "lightning_logs" / "version_0" / "metrics.json").read_text())["final"]
    assert np.isfinite(final["val/loss"])


def _cli(config, root, reports, tmp_path, *extra):
    return tessera(["fit", "--config", str(ROOT / "configs" / "cxr" / config), "--trainer.default_root_dir", str(root),
                    "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
                    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                    "--data.init_args.reports", str(reports), "--data.init_args.cache_dir", str(tmp_path / "cache"),
                    "--data.init_args.vocab_size", "200", "--data.init_args.batch_size", "8", *extra])


@pytest.mark.parametrize("config", ["bert_mlm_tiny.yaml", "llm2vec_simcse_tiny.yaml"])
def test_a_text_run_exports_a_folder_that_tessera_embed_reads(config, reports, tmp_path):
    assert _cli(config, tmp_path / "run", reports, tmp_path) == 0
    encoder = tmp_path / "run" / "lightning_logs" / "version_0" / "encoder"
    assert (encoder / "tokenizer.json").is_file()
    assert json.loads((encoder / "config.json").read_text())["meta"]["modality"] == "text"
    (tmp_path / "reports.txt").write_text("The heart is normal in size.\nLeft pneumothorax.\nLungs clear.\n")
    out = tmp_path / "emb"
    assert tessera(["embed", "--encoder", str(encoder), str(tmp_path / "reports.txt"), "--out", str(out), "--quiet",
                    "--query", "pneumothorax on the left", "--top-k", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "text" and summary["count"] == 3 and summary["dim"] == 128
    if config == "bert_mlm_tiny.yaml":  # it keeps checkpoints: `tessera export` rebuilds the same folder
        again = tmp_path / "exported"
        assert tessera(["export", str(tmp_path / "run"), str(again)]) == 0
        assert (again / "tokenizer.json").read_text() == (encoder / "tokenizer.json").read_text()
        assert json.loads((again / "config.json").read_text())["meta"]["modality"] == "text"


@pytest.mark.slow
def test_llm2vec_stages_through_the_cli_then_retrieval(reports, tmp_path):
    from modalities import load_encoder
    from tasks.data.cxr import load_reports
    from tasks.eval.cxr import (
        folder_encoder,
        retrieval_table,
        test_pairs,
        tfidf_encoder,
        write_report,
    )

    _cli("llm2vec_clm_tiny.yaml", tmp_path / "clm", reports, tmp_path)  # the stand-in for a pretrained LLM
    clm = tmp_path / "clm" / "lightning_logs" / "version_0" / "encoder"
    assert load_encoder(clm).config.bidirectional is False  # trained and exported causal
    _cli("llm2vec_mntp_tiny.yaml", tmp_path / "mntp", reports, tmp_path,
         "--model.init_args.encoder.init_args.config.lora_r", "4", "--model.init_args.encoder.init_args.init_from", str(clm))
    mntp = tmp_path / "mntp" / "lightning_logs" / "version_0"
    assert json.loads((mntp / "metrics.json").read_text())["final"]["val/loss"] > 0
    assert (mntp / "encoder" / "adapter" / "adapter_model.safetensors").is_file()  # peft layout too
    assert (mntp / "encoder" / "tokenizer.json").is_file()
    _cli("llm2vec_simcse_tiny.yaml", tmp_path / "simcse", reports, tmp_path,
         "--model.init_args.tower.init_args.init_from", str(mntp / "encoder"), "--model.init_args.supervised", "true",
         "--data.init_args.mode", "pairs")
    folder = tmp_path / "simcse" / "lightning_logs" / "version_0" / "encoder"
    final = json.loads((folder.parent / "metrics.json").read_text())["final"]
    assert 0 <= final["val/recall@1"] <= final["val/recall@10"] <= 1
    reps, read = load_reports(reports)
    pairs = test_pairs(reps, "train")
    table = retrieval_table({"tfidf": tfidf_encoder(reps), "llm2vec": folder_encoder(folder)}, pairs)
    result = write_report(table, tmp_path / "ret", {"data": read})
    assert (tmp_path / "ret" / "retrieval.png").stat().st_size > 10_000
    assert set(result["results"]["llm2vec"]) == {"original", "abbreviated", "negations_reworded", "abbreviated_and_reworded"}
    assert table["tfidf"]["original"]["f2i"]["recall@10"] > 0.5  # the templates are lexically distinct


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_clip_and_siglip_fit_on_synthetic_images(reports, tmp_path, loss):
    extra = ["--model.init_args.loss", loss, "--data.init_args.image_size", "32"]
    if loss == "siglip":
        extra += ["--model.init_args.model.init_args.init_logit_bias", "-10",
                  "--model.init_args.model.init_args.init_logit_scale", "2.302585"]
    _cli("clip_tiny.yaml", tmp_path / loss, reports, tmp_path, *extra)
    log = tmp_path / loss / "lightning_logs" / "version_0"
    final = json.loads((log / "metrics.json").read_text())["final"]
    assert np.isfinite(final["val/loss"]) and 0 <= final["val/i2t_recall@1"] <= 1
    # the encoder folder is the text tower (+ dual_tower/); the run folder and the encoder folder
    # evaluate to the same figures (the run rebuilt by tasks.runs, the folder by load_dual_tower)
    encoder = log / "encoder"
    assert (encoder / "dual_tower" / "model.safetensors").is_file() and (encoder / "tokenizer.json").is_file()
    assert json.loads((encoder / "dual_tower" / "preprocess.json").read_text())["image_size"] == 32
    exported = tmp_path / "exported"  # `tessera export` of the run writes the same layout
    assert tessera(["export", str(tmp_path / loss), str(exported)]) == 0
    assert {p.name for p in (exported / "dual_tower").iterdir()} == {"config.json", "model.safetensors", "preprocess.json"}
    results = []
    for src in (encoder, tmp_path / loss, exported):
        assert tessera(["eval", "cxr-clip", str(src), "--reports", str(reports), "--split", "train",
                        "--out", str(tmp_path / "eval" / src.name)]) == 0
        results.append(json.loads((tmp_path / "eval" / src.name / "clip_eval.json").read_text()))
    r = results[0]
    assert r["images_are"].startswith("SYNTHETIC") and 0 <= r["i2t_same_findings"]["recall@1"] <= 1
    assert r["image_size"] == results[1]["image_size"] == 32
    assert r["zero_shot_auroc"] == results[1]["zero_shot_auroc"]
    assert r["i2t_same_findings"] == results[1]["i2t_same_findings"] == results[2]["i2t_same_findings"]
    # and `tessera embed` reads the encoder folder as a text encoder
    (tmp_path / "q.txt").write_text("Cardiomegaly.\nNo pneumothorax.\n")
    assert tessera(["embed", "--encoder", str(encoder), str(tmp_path / "q.txt"), "--out", str(tmp_path / "emb"),
                    "--quiet"]) == 0
    assert json.loads((tmp_path / "emb" / "summary.json").read_text())["count"] == 2


def test_pipeline_reuse_finds_only_finished_stages(tmp_path):
    from tasks.cxr_pipeline import finished_stage, run_pipeline

    def run(version, step, exported):
        log = tmp_path / "lightning_logs" / f"version_{version}"
        (log / "encoder").mkdir(parents=True)
        (log / "metrics.json").write_text(json.dumps({"global_step": step}))
        if exported:
            (log / "encoder" / "config.json").write_text("{}")
        return log

    assert finished_stage(tmp_path, 10) is None
    done = run(0, 10, True)
    run(1, 4, False)  # interrupted: no export
    run(2, 20, True)  # another step count
    assert finished_stage(tmp_path, 10) == done
    assert finished_stage(tmp_path, 20).name == "version_2"
    with pytest.raises(ValueError, match="not one of"):
        run_pipeline("gpt", tmp_path, {"supervised": 1})
    with pytest.raises(ValueError, match="0 steps"):
        run_pipeline("bert", tmp_path, {})


@pytest.mark.slow
def test_clip_fits_under_ddp_on_two_cpu_processes(reports, tmp_path):
    """`tessera fit` with the DDP preset: two gloo processes, open_clip's gathered ClipLoss, one
    checkpoint and the metrics written once (rank 0)."""
    import subprocess
    import sys

    tessera_bin = Path(sys.executable).parent / "tessera"  # Lightning's DDP launcher re-runs this command
    root = tmp_path / "ddp"
    cmd = [str(tessera_bin), "fit", "--config", str(ROOT / "configs" / "cxr" / "clip_tiny.yaml"),
           "--config", str(ROOT / "configs" / "trainer" / "ddp_cpu.yaml"), "--trainer.default_root_dir", str(root),
           "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--data.init_args.reports", str(reports), "--data.init_args.cache_dir", str(tmp_path / "cache"),
           "--data.init_args.vocab_size", "200", "--data.init_args.batch_size", "8", "--data.init_args.image_size", "32"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    log = root / "lightning_logs" / "version_0"
    final = json.loads((log / "metrics.json").read_text())["final"]
    assert np.isfinite(final["val/loss"]) and 0 <= final["val/i2t_recall@1"] <= 1
    assert len(list((log / "checkpoints").glob("*.ckpt"))) >= 1
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in run.stdout + run.stderr  # the second process did run


def test_head_to_head_counts_wins_per_seed_and_style():
    from tasks.eval.cxr import head_to_head

    def table(a1, b1):  # tower -> style -> direction -> metric; a and b differ only at f2i R@1
        def cell(r1):
            return {d: {"recall@1": r1 if d == "f2i" else 0.5, "recall@10": 0.9} for d in ("f2i", "i2f")}
        styles = ("original", "abbreviated", "negations_reworded", "abbreviated_and_reworded")
        return {"a": {s: cell(a1[i]) for i, s in enumerate(styles)}, "b": {s: cell(b1[i]) for i, s in enumerate(styles)}}

    per_seed = {0: table([0.3, 0.2, 0.2, 0.1], [0.2, 0.3, 0.2, 0.0]),  # win, loss, tie, win
                1: table([0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.2, 0.3])}  # loss, win, win, win
    h = head_to_head(per_seed, "a", "b")
    assert h["all"]["f2i"]["recall@1"] == {"wins": 5, "losses": 2, "ties": 1, "cases": 8}
    assert h["styled"]["f2i"]["recall@1"] == {"wins": 4, "losses": 1, "ties": 1, "cases": 6}  # "original" left out
    assert h["all"]["i2f"]["recall@1"] == {"wins": 0, "losses": 0, "ties": 8, "cases": 8}
    assert head_to_head(per_seed, "b", "a")["all"]["f2i"]["recall@1"]["wins"] == 2
    with pytest.raises(KeyError, match="lacks"):
        head_to_head(per_seed, "a", "c")

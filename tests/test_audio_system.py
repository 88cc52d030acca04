"""tasks.audio (MERT pretraining, the RVQ-VAE teacher) and its pieces: teachers, masks, noise, heads,
a CLI fit on synthetic tones, probing features."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import tone_folder, tones

from modalities.audio import create_audio_encoder
from modalities.audio.heads import MERTHeads
from modalities.audio.io import normalize
from modalities.audio.masking import length_mask, noise_mixture, span_mask
from modalities.audio.probe import layer_features, linear_probe
from modalities.audio.teachers import CQTTeacher, RVQTeacher, align
from tasks.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "audio" / "tiny.yaml"


def test_cqt_teacher_has_mert_settings_and_finds_the_pitch():
    cqt = CQTTeacher(n_bins=84, bins_per_octave=12)  # MERT's 336/48 has the same geometry at 4x resolution
    wav = torch.stack(tones(2, 1.0))  # A2 and A#2
    mag = cqt(wav)  # (B, T', bins)
    assert mag.shape == (2, 24000 // 320 + 1, 84)
    # fmin 32.7 Hz is C1; A2 = 110 Hz lies 21 semitones above
    assert mag[0, 30:40].mean(0).argmax() == 21 and mag[1, 30:40].mean(0).argmax() == 22
    assert not CQTTeacher().state_dict()  # the 336-bin kernels stay out of checkpoints
    with pytest.raises(ValueError, match="Nyquist"):
        CQTTeacher(sample_rate=8000, n_bins=336)


def test_rvq_teacher_codes_after_kmeans_fit():
    t = RVQTeacher(num_codebooks=3, codebook_size=16, num_filters=4, hidden_size=16, num_lstm_layers=1)
    wav = torch.stack(tones(4, 0.5))
    assert not t.fitted
    frames = t.embed(wav).flatten(0, 1)
    errors = t.fit_codebooks(frames, iters=5)
    assert t.fitted and errors == sorted(errors, reverse=True)  # each level reduces the residual
    codes = t(wav)
    assert codes.shape == (4, 3, 38) and codes.dtype == torch.long  # 75 Hz: ceil(12000 / 320)
    assert codes.min() >= 0 and codes.max() < 16 and codes[:, 0].unique().numel() > 1
    with pytest.raises(ValueError, match="fewer than the student"):
        align(50, codes, dim=2)


def test_span_mask_and_noise_mixture():
    frame_mask = torch.zeros(3, 100, dtype=torch.bool)
    frame_mask[0, :100], frame_mask[1, :40], frame_mask[2, :3] = True, True, True
    g = torch.Generator().manual_seed(0)
    m = span_mask(frame_mask, 0.8, 5, g)
    assert not (m & ~frame_mask).any()  # never on padding
    assert 0.35 < m[0].float().mean() < 0.75  # overlapping spans: about 1 - exp(-0.8)
    assert m[2].any()  # even a 3-frame clip gets a span
    wav = torch.stack([torch.ones(1000), 2 * torch.ones(1000), 3 * torch.ones(1000)])
    wav[2, 500:] = 0
    lengths = torch.tensor([1000, 1000, 500])
    mixed = noise_mixture(wav, lengths, 1000, prob=1.0, segments=(1, 1), seconds=(0.2, 0.2), generator=g)
    assert (mixed != wav).any(1).all()  # every clip got a segment from another clip
    assert mixed[2, 500:].abs().max() == 0  # padding stays silent
    assert torch.equal(noise_mixture(wav, lengths, 1000, prob=0.0), wav)


def test_heads_losses_and_accuracy():
    torch.manual_seed(0)
    heads = MERTHeads(16, num_codebooks=2, codebook_size=8, final_dim=4, cqt_bins=5)
    h = torch.randn(10, 16)
    out = heads(h, torch.randint(8, (10, 2)), torch.rand(10, 5))
    assert set(out) == {"loss", "rvq_ce", "rvq_acc", "cqt_mse"}
    assert torch.isclose(out["loss"], out["rvq_ce"] + out["cqt_mse"])
    logits = heads.codebooks(h)
    assert logits.shape == (10, 2, 8) and logits.abs().max() <= 1 / 0.1 + 1e-4  # cosine / temperature


def test_tiny_pretraining_through_the_cli(tmp_path):
    root = tone_folder(tmp_path, 12, 0.8)
    (root / "garbage.wav").write_bytes(b"not audio" * 50)  # dropped at setup: counted in metrics.json
    val_dir = tone_folder(tmp_path, 2, 0.8, name="val")  # + one unreadable file, one that fails to decode
    (val_dir / "broken.wav").write_bytes(b"not audio" * 50)
    sf.write(val_dir / "silent.wav", np.zeros(12000, np.float32), 24000)
    run = tmp_path / "run"
    cli_main(["fit", "--config", str(TINY), "--data.init_args.train", str(root), "--data.init_args.batch_size", "4",
              "--data.init_args.val", str(val_dir), "--model.init_args.fit_codebooks_batches", "2",
              "--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.enable_progress_bar",
              "false", "--trainer.default_root_dir", str(run)])
    log = run / "lightning_logs" / "version_0"
    metrics = json.loads((log / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    val = metrics["history"]["val"][-1]
    assert all(np.isfinite(val[f"val/{k}"]) for k in ("loss", "rvq_ce", "rvq_acc", "cqt_mse"))
    assert val["val/skipped_files"] == 2  # the unreadable header at setup + the silent file in the round
    assert metrics["history"]["train"][0]["train/skipped_val_files"] == 1  # before any round: the header only
    assert metrics["history"]["train"][-1]["train/skipped_setup_files"] == 1  # the training folder's garbage
    from tasks.audio import MERTPretraining
    from tasks.runs import load_system

    system, _, _ = load_system(run)  # config.yaml + last.ckpt read with weights_only=True
    assert isinstance(system, MERTPretraining)
    assert system.rvq_teacher.fitted  # the k-means codebooks travel with the checkpoint
    assert bool(system.heads.cqt_stats_set) and (system.heads.cqt_std != 1).all()  # so do the CQT statistics
    encoder = json.loads((log / "encoder" / "config.json").read_text())
    assert encoder["meta"]["modality"] == "audio" and encoder["meta"]["sample_rate"] == 24000
    # the run's fitted k-means teacher labels a folder (read back through load_system, never unpickled)
    assert cli_main(["prepare", "audio-codes", str(root), "--out", str(tmp_path / "codes"), "--run", str(run),
                     "--quiet"]) == 0
    from safetensors.torch import load_file

    from tasks.prepare.audio import code_path

    codes = load_file(code_path(tmp_path / "codes", root / "t0.wav"))["codes"]
    wav = torch.from_numpy(sf.read(root / "t0.wav", dtype="float32")[0])[None]
    assert torch.equal(codes.long(), system.rvq_teacher(wav)[0])


def test_probe_features_and_linear_probe():
    enc = create_audio_encoder("mert-tiny").eval()
    clips = tones(6, 0.3) + tones(3, 0.5)
    feats = layer_features(enc, clips, batch_size=4)
    assert feats.shape == (9, 3, 64)
    alone = layer_features(enc, clips[:1])
    assert (alone[0] - feats[0]).abs().max() < 1e-4  # pooling ignores the batch's padding
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    assert linear_probe(x[:150], y[:150], x[150:], y[150:]) > 0.9
    assert linear_probe(x[:150], y[:150], x[150:], y[150:], hidden=16) > 0.8


@pytest.mark.skipif(importlib.util.find_spec("tinysoundfont") is None, reason="tinysoundfont not installed")
def test_rendered_notes_have_their_pitch(tmp_path):
    from tasks.data.fetch import default_cache_dir

    sf2 = default_cache_dir() / "soundfonts" / "TimGM6mb.sf2"
    if not sf2.is_file():
        pytest.skip("soundfont not in the cache: run `tessera prepare audio-notes` once")
    from modalities.audio.render import read_note_set, render_note_set

    notes = render_note_set(sf2, tmp_path, families=(0, 5), programs_per_family=2, pitches=(57, 59),
                            seconds=0.5, progress=False)
    assert len(notes) == 8 and {n.split for n in notes} == {"train", "test"}
    assert read_note_set(tmp_path) == notes
    cqt = CQTTeacher(n_bins=84, bins_per_octave=12, log=True)
    for n in notes:
        x, sr = sf.read(tmp_path / n.file, dtype="float32")
        assert sr == 24000 and np.abs(x).max() > 1e-3
        spec = cqt(torch.from_numpy(x)[None])[0, 5:30].mean(0)  # (84,)
        # the fundamental (bin = pitch - 24, C1 = MIDI 24) is among the strongest partials
        assert n.pitch - 24 in spec.topk(4).indices.tolist() or (n.pitch - 12) - 24 in spec.topk(4).indices.tolist()


def test_rvq_vae_teacher_trains_and_loads_as_init_from(tmp_path):
    root = tone_folder(tmp_path, 10, 0.6)
    (root / "garbage.wav").write_bytes(b"not audio" * 50)
    run = tmp_path / "rvq"
    cli_main(["fit", "--config", str(ROOT / "configs" / "audio" / "rvq_tiny.yaml"), "--data.init_args.train", str(root),
              "--data.init_args.batch_size", "4", "--data.init_args.val_fraction", "0.2", "--trainer.max_steps", "12",
              "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(run), "--model.init_args.lr", "3e-3"])
    metrics = json.loads((run / "lightning_logs" / "version_0" / "metrics.json").read_text())
    val = [r["val/loss"] for r in metrics["history"]["val"]]
    assert np.isfinite(val).all() and val[-1] < val[0]  # reconstruction improves
    last = metrics["history"]["train"][-1]  # the garbage file, dropped at setup, is counted in metrics.json
    assert last["train/skipped_setup_train_files"] + last["train/skipped_setup_val_files"] == 1
    teacher = RVQTeacher(num_codebooks=4, init_from=str(run / "encodec"))
    assert teacher.fitted and teacher.codebook_size == 64
    codes = teacher(torch.stack(tones(2, 0.5)))
    assert codes.shape == (2, 4, 38) and codes.max() < 64


def test_unmasked_weight_adds_the_loss_on_unmasked_frames():
    """unmasked_weight (HuBERT's pred_nomask_weight): loss = masked loss + w * the same loss on the real
    unmasked frames; 0 (MERT's) leaves the masked loss alone."""
    from modalities.audio import AudioEncoder, AudioEncoderConfig
    from tasks.audio import MERTPretraining

    def system(w):
        torch.manual_seed(0)
        enc = AudioEncoder(AudioEncoderConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                              conv_dim=[32] * 7, num_conv_pos_embeddings=16,
                                              num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
                                              attention_dropout=0.0))
        return MERTPretraining(enc, cqt_teacher=CQTTeacher(n_bins=24, bins_per_octave=12), unmasked_weight=w,
                               noise_prob=0.0)

    wav = torch.stack(tones(2, 0.6))
    batch = {"input_values": wav, "lengths": torch.tensor([wav.shape[1], wav.shape[1] // 2])}
    plain, both = system(0.0), system(0.5)
    out0 = plain(batch, torch.Generator().manual_seed(1), noisy=False)
    out1 = both(batch, torch.Generator().manual_seed(1), noisy=False)  # same weights, same masks
    assert "unmasked_loss" not in out0 and out1["unmasked_loss"] > 0
    assert torch.isclose(out1["loss"], out0["loss"] + 0.5 * out1["unmasked_loss"])
    # by hand: the heads on the unmasked real frames of the same forward pass
    T = plain.encoder.config.num_frames(wav.shape[1])
    frame_mask = length_mask(plain.encoder.frontend.frame_lengths(batch["lengths"]), T)
    masked = span_mask(frame_mask, 0.8, 5, torch.Generator().manual_seed(1)) & frame_mask
    h = plain.encoder(input_values=normalize(wav, batch["lengths"]),
                      attention_mask=length_mask(batch["lengths"], wav.shape[1]),
                      mask_time_indices=masked).last_hidden_state
    _, cqt = plain.targets(wav, T)
    hand = plain.heads(h[frame_mask & ~masked], None, cqt[frame_mask & ~masked])["loss"]
    assert torch.isclose(hand, out1["unmasked_loss"], atol=1e-5)
    with pytest.raises(ValueError, match="unmasked_weight"):
        system(-1.0)


@pytest.mark.parametrize("mult", [0.0, 0.5])
def test_frontend_lr_mult_freezes_or_slows_only_the_conv_stack(mult):
    """frontend_lr_mult: the conv feature extractor at mult x lr (0: frozen, no gradient); the rest at lr."""
    import types

    from modalities.audio import AudioEncoder, AudioEncoderConfig
    from tasks.audio import MERTPretraining

    torch.manual_seed(0)
    enc = AudioEncoder(AudioEncoderConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                          conv_dim=[32] * 7, num_conv_pos_embeddings=16,
                                          num_conv_pos_embedding_groups=4))
    system = MERTPretraining(enc, cqt_teacher=CQTTeacher(n_bins=24, bins_per_octave=12), frontend_lr_mult=mult,
                             lr=1e-2, warmup=0)
    system._trainer = types.SimpleNamespace(estimated_stepping_batches=10)
    opt = system.configure_optimizers()["optimizer"]
    convs = list(enc.frontend.feature_extractor.parameters())
    conv_ids = {id(p) for p in convs}
    lrs = {g["lr"] for g in opt.param_groups if any(id(p) in conv_ids for p in g["params"])}
    rest = {g["lr"] for g in opt.param_groups if not any(id(p) in conv_ids for p in g["params"])}
    assert rest == {1e-2} and lrs == (set() if mult == 0 else {1e-2 * mult})
    assert all(p.requires_grad == (mult > 0) for p in convs)
    before = [p.detach().clone() for p in convs]
    proj = enc.frontend.feature_projection.projection.weight.detach().clone()
    wav = torch.stack(tones(2, 0.5))
    enc(input_values=normalize(wav)).last_hidden_state.pow(2).mean().backward()
    opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, convs, strict=True)) == (mult == 0)
    assert not torch.equal(proj, enc.frontend.feature_projection.projection.weight)
    with pytest.raises(ValueError, match="frontend_lr_mult"):
        MERTPretraining(enc, cqt_teacher=CQTTeacher(n_bins=24, bins_per_octave=12), frontend_lr_mult=-1)

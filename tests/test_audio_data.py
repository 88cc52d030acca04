"""Audio input: every WAV flavour decodes to mono float at 24 kHz; bad files are clear errors or counted skips."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modalities.audio.io import AudioReadError, load_audio, normalize, pcm_to_float
from tasks.data.audio import AudioFolderDataModule, collate_audio
from tasks.jobs import UserError


def tone(seconds=0.5, sr=24000, freq=440.0, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


@pytest.mark.parametrize(
    "subtype, sr, channels",
    [("PCM_16", 24000, 1), ("PCM_U8", 24000, 1), ("PCM_24", 24000, 1), ("FLOAT", 24000, 1),
     ("PCM_16", 44100, 2), ("PCM_16", 16000, 1), ("PCM_24", 48000, 2)],
    ids=["16bit", "8bit", "24bit", "float", "44k-stereo", "16k", "48k-24bit-stereo"],
)
def test_wav_flavours_decode_to_mono_24k(tmp_path, subtype, sr, channels):
    path = tmp_path / "a.wav"
    sf.write(path, tone(0.5, sr, channels=channels), sr, subtype=subtype)
    x = load_audio(path, 24000)
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - 12000) <= 1
    ref = tone(0.5, 24000)[: len(x)]
    mid = slice(1000, len(x) - 1000)  # resampler edges aside
    tol = 0.02 if subtype == "PCM_U8" else 2e-3
    assert np.abs(x[mid] - ref[mid]).max() < tol


def test_flac_and_ogg_decode(tmp_path):
    for fmt in ("flac", "ogg"):
        path = tmp_path / f"a.{fmt}"
        sf.write(path, tone(0.5), 24000)
        assert len(load_audio(path)) == 12000


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: sf.write(p, np.zeros(24000, np.float32), 24000), "silent"),
        (lambda p: sf.write(p, np.full(24000, np.nan, np.float32), 24000, subtype="FLOAT"), "nan"),
        (lambda p: sf.write(p, tone(0.01), 24000), "too_short"),  # 240 samples < 400
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(100)), "unreadable"),
        (lambda p: None, "missing"),
    ],
    ids=["silence", "nan", "too-short", "corrupt-header", "missing"],
)
def test_bad_files_raise_with_reason_and_path(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioReadError, match="bad.wav") as e:
        load_audio(path)
    assert e.value.reason == reason


def test_pcm_to_float_and_normalize():
    assert pcm_to_float(torch.tensor([-32768, 0, 16384], dtype=torch.int16)).tolist() == [-1.0, 0.0, 0.5]
    assert pcm_to_float(np.array([0, 128, 255], np.uint8)).tolist() == pytest.approx([-1.0, 0.0, 0.9921875])
    x = torch.randn(2, 100) * 3 + 1
    y = normalize(x, torch.tensor([100, 60]))
    assert y[1, 60:].abs().max() == 0 and abs(float(y[1, :60].mean())) < 1e-5
    assert abs(float(y[1, :60].std(unbiased=False)) - 1) < 1e-3
    assert normalize(torch.zeros(1, 50)).abs().max() == 0  # silence stays finite


def test_folder_module_counts_skips_and_never_dies(tmp_path):
    root = tmp_path / "music"
    root.mkdir()
    for i in range(6):
        sf.write(root / f"ok{i}.wav", tone(0.3 + 0.1 * i, freq=220 * (i + 1)), 24000)
    sf.write(root / "stereo44k.wav", tone(0.5, 44100, channels=2), 44100)
    (root / "corrupt.wav").write_bytes(b"not audio at all" * 10)
    sf.write(root / "tiny.wav", tone(0.005), 24000)
    sf.write(root / "silent.wav", np.zeros(12000, np.float32), 24000)  # passes the probe, fails decoding
    dm = AudioFolderDataModule(str(root), val_fraction=0.0, crop_seconds=0.4, batch_size=4, min_seconds=0.01)
    dm.setup("fit")
    stats = dm.stats["train"]
    assert stats.files == 10 and stats.skipped == {"unreadable": 1, "too_short": 1} and stats.records == 8
    seen, skipped = 0, []
    for batch in dm.train_dataloader():
        seen += len(batch["lengths"])
        skipped += batch["skipped"]
        assert batch["input_values"].shape[1] <= int(0.4 * 24000)
        assert (batch["lengths"] >= 400).all()
    assert seen + len(skipped) == len(dm.train_set) + len(dm.val_set) - len(dm.val_set)
    assert skipped == ["silent"]


def test_crops_are_seeded_by_epoch_and_index(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    sf.write(root / "long.wav", np.random.default_rng(0).standard_normal(24000 * 3).astype(np.float32) * 0.1, 24000)
    sf.write(root / "other.wav", tone(2.0), 24000)
    dm = AudioFolderDataModule(str(root), val_fraction=0.0, crop_seconds=1.0, batch_size=1)
    dm.setup("fit")
    i = [f[0].name for f in dm.train_set.files].index("long.wav")
    a, b, c = dm.train_set[(0, i)][0], dm.train_set[(0, i)][0], dm.train_set[(1, i)][0]
    assert len(a) == 24000 and torch.equal(a, b) and not torch.equal(a, c)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"--data.init_args.train .* holds no audio files"):
        AudioFolderDataModule(str(tmp_path)).setup("fit")
    (tmp_path / "junk.wav").write_bytes(b"not audio" * 50)
    with pytest.raises(UserError, match="no usable audio files.*unreadable: 1"):
        AudioFolderDataModule(str(tmp_path)).setup("fit")
    assert collate_audio([(None, "nan")])["skipped"] == ["nan"]


def test_a_folder_none_of_whose_files_decode_is_named_at_setup(tmp_path):
    # headers are fine (the probe passes), the samples are not: silence and NaN
    for i in range(3):
        sf.write(tmp_path / f"silent{i}.wav", np.zeros(12000, np.float32), 24000)
    sf.write(tmp_path / "nan.wav", np.full(12000, np.nan, np.float32), 24000, subtype="FLOAT")
    dm = AudioFolderDataModule(str(tmp_path), val_fraction=0.0, crop_seconds=0.4)
    with pytest.raises(UserError, match=rf"none of 3 files sampled under {tmp_path} decodes.*silent"):
        dm.setup("fit")


def test_a_validation_folder_of_undecodable_files_warns_and_counts_instead_of_failing(tmp_path, capsys):
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir(), val.mkdir()
    sf.write(train / "a.wav", tone(0.5), 24000)
    for i in range(3):
        (val / f"bad{i}.wav").write_bytes(b"not audio" * 50)
    dm = AudioFolderDataModule(str(train), val=str(val), crop_seconds=0.4)
    dm.setup("fit")
    out = capsys.readouterr().out
    assert len(dm.val_set) == 0 and dm.stats["val"].skipped == {"unreadable": 3}
    assert f"warning: --data.init_args.val {val}: none of the 3 files" in out and "without validation" in out


def test_a_missing_user_folder_names_the_option_and_the_default_set(tmp_path):
    dm = AudioFolderDataModule(str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"--data.init_args.train .*nope does not exist.*tessera prepare audio-notes"):
        dm.prepare_data()
    dm = AudioFolderDataModule(str(tmp_path), val=str(tmp_path / "gone"))
    with pytest.raises(UserError, match=r"--data.init_args.val .*gone does not exist"):
        dm.prepare_data()


def test_cache_paths_resolve_under_tessera_cache(tmp_path, monkeypatch):
    from tasks.data.fetch import cache_path

    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path))
    assert cache_path("cache:audio/notes/train") == tmp_path / "audio" / "notes" / "train"
    assert cache_path("/x/y") == Path("/x/y")


def test_teacher_fit_batches_are_a_seeded_draw_across_folders(tmp_path):
    # sorted names group files by folder: the k-means / CQT-statistics batches must not be the first files
    for folder, freq in (("a_bass", 110.0), ("b_flute", 880.0)):
        (tmp_path / folder).mkdir()
        for i in range(12):
            sf.write(tmp_path / folder / f"{i:02d}.wav", tone(0.2, freq=freq * (1 + i / 50)), 24000)
    dm = AudioFolderDataModule(str(tmp_path), val_fraction=0.0, crop_seconds=0.2, batch_size=4)
    batches = dm.codebook_fit_loader(2)
    assert sum(len(b["lengths"]) for b in batches) == 8
    first = [torch.equal(c, dm.train_set[(0, i)][0]) for b in batches for c in b["input_values"] for i in range(8)]
    assert sum(first) < 8  # not simply the first eight files (all in a_bass/)
    again = dm.codebook_fit_loader(2)
    assert all(torch.equal(x["input_values"], y["input_values"]) for x, y in zip(batches, again, strict=True))


def test_fit_on_a_missing_folder_exits_2_naming_the_option(tmp_path, capsys):
    from audio_fixtures import user_error

    tiny = Path(__file__).resolve().parents[1] / "configs" / "audio" / "tiny.yaml"
    user_error(capsys, ["fit", "--config", str(tiny), "--data.init_args.train", str(tmp_path / "nope"),
                        "--trainer.fast_dev_run=true", "--trainer.default_root_dir", str(tmp_path / "run")],
               "--data.init_args.train", "does not exist", "tessera prepare audio-notes")

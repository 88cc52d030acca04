"""The rendered probe sets' contract, the k-means teacher, key labels and rendering (the public benchmarks' readers:
test_audio_benchmarks.py)."""

import importlib.util

import numpy as np
import pytest
import soundfile as sf
import torch

from modalities.audio.datasets import ProbeSet
from modalities.audio.masking import length_mask, masked_mean
from modalities.audio.teachers import KMeansTeacher


def tone(freq, seconds=0.3, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_probe_set_needs_both_splits():
    with pytest.raises(ValueError, match="both training and test"):
        ProbeSet("x", ["a", "b"], [True, True], {"t": [0, 1]})
    with pytest.raises(ValueError, match="differ in length"):
        ProbeSet("x", ["a", "b"], [True, False], {"t": [0]})


def test_length_mask_and_masked_mean():
    m = length_mask(torch.tensor([2, 3]), 4)
    assert m.tolist() == [[True, True, False, False], [True, True, True, False]]
    x = torch.arange(8.0).reshape(2, 4, 1)
    assert masked_mean(x, m).flatten().tolist() == [0.5, 5.0]


def test_mean_std_pooling_uses_only_each_clips_real_frames():
    from modalities.audio.probe import pool_frames

    m = length_mask(torch.tensor([2, 3]), 4)
    x = torch.tensor([[0.0, 2.0, 99.0, 99.0], [1.0, 2.0, 6.0, -50.0]])[..., None]  # (B, T, 1), padding 99 / -50
    assert pool_frames(x, m).flatten().tolist() == [1.0, 3.0]
    both = pool_frames(x, m, "mean+std")  # (B, 2): mean, then the population std of the real frames
    assert torch.allclose(both, torch.tensor([[1.0, 1.0], [3.0, (14 / 3) ** 0.5]]))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool_frames(x, m, "max")


def test_kmeans_teacher_codes_follow_the_spectrum():
    t = KMeansTeacher(num_codebooks=2, codebook_size=4, n_mels=40)
    low, high = torch.from_numpy(tone(220, 1.0, 24000)), torch.from_numpy(tone(1760, 1.0, 24000))
    with pytest.raises(RuntimeError, match="fit_codebooks"):
        t(low[None])
    frames = t.embed(torch.stack([low, high])).flatten(0, 1)
    errors = t.fit_codebooks(frames, seed=0)
    assert t.fitted and errors[1] <= errors[0] < 1.0  # standardised frames: k-means explains most variance
    codes = t(torch.stack([low, high]))  # (2, K, T')
    assert codes.shape == (2, 2, 24000 // 320 + 1) and codes.dtype == torch.long
    mid = slice(10, 60)
    assert codes[0, 0, mid].mode().values != codes[1, 0, mid].mode().values  # two tones, two first-level codes
    assert set(t.state_dict()) == {"centers", "mean", "std"}  # filterbank rebuilt, codebooks saved


def test_kmeans_teacher_on_cqt_frames_tells_a_semitone_apart():
    # 220 Hz and 233 Hz (one semitone) fall in one low log-mel band; the 12-per-octave CQT separates them
    t = KMeansTeacher(num_codebooks=1, codebook_size=2, features="cqt", cqt_bins=84, cqt_bins_per_octave=12)
    a, b = torch.from_numpy(tone(220, 1.0, 24000)), torch.from_numpy(tone(220 * 2 ** (1 / 12), 1.0, 24000))
    t.fit_codebooks(t.embed(torch.stack([a, b]))[:, 10:60].flatten(0, 1), seed=0)  # steady-state frames
    codes = t(torch.stack([a, b]))[:, 0, 10:60]  # (2, T) first-level codes, middle frames
    assert codes[0].mode().values != codes[1].mode().values
    assert set(t.state_dict()) == {"centers", "mean", "std"}  # CQT kernels rebuilt, codebooks saved
    with pytest.raises(ValueError, match="features"):
        KMeansTeacher(features="chroma")


@pytest.mark.skipif(importlib.util.find_spec("music21") is None, reason="music21 not installed")
def test_score_key_uses_signature_and_analysis():
    from music21 import key, note, stream

    from modalities.audio.render import KEY_NAMES, piece_events, score_key

    def piece(sig_sharps, pitches):
        s = stream.Stream()
        s.append(key.KeySignature(sig_sharps))
        for p in pitches:
            s.append(note.Note(p, quarterLength=1))
        return s

    tonic, mode = score_key(piece(0, ["A3", "C4", "E4", "A4", "E4", "G#4", "A4", "E4", "C4", "A3"]))
    assert KEY_NAMES[tonic + 12 * (mode == "minor")] == "A minor"  # no sharps, but A minor by its notes
    tonic, mode = score_key(piece(0, ["C4", "E4", "G4", "C5", "G4", "F4", "E4", "D4", "C4"]))
    assert KEY_NAMES[tonic] == "C major" and mode == "major"
    with pytest.raises(ValueError, match="key signature"):
        s = stream.Stream()
        s.append(note.Note("C4"))
        score_key(s)
    ev = piece_events(piece(0, ["C4", "D4", "E4"]), seconds=1.0, bpm=120)  # 0.5 s a quarter: 2 notes fit
    assert ev == [(0.0, 1, 60), (0.5, -1, 60), (0.5, 1, 62), (1.0, -1, 62)]


@pytest.mark.skipif(importlib.util.find_spec("tinysoundfont") is None or importlib.util.find_spec("music21") is None,
                    reason="tinysoundfont or music21 not installed")
def test_key_set_renders_transposed_pieces(tmp_path):
    from tasks.data.fetch import default_cache_dir

    sf2 = default_cache_dir() / "soundfonts" / "TimGM6mb.sf2"
    if not sf2.is_file():
        pytest.skip("soundfont not in the cache: run `tessera prepare audio-notes` once")
    from modalities.audio.datasets import read_keys
    from modalities.audio.render import read_key_set, render_key_set

    clips = render_key_set(sf2, tmp_path, max_pieces=3, seconds=1.0, test_fraction=0.5, progress=False)
    assert len(clips) == 6 and read_key_set(tmp_path) == clips
    for a, b in zip(clips[::2], clips[1::2], strict=True):  # original, then its transposition
        assert a.transpose == 0 and b.piece == a.piece and b.split == a.split
        assert (b.key % 12 - a.key % 12) % 12 == b.transpose % 12 and b.key // 12 == a.key // 12
        x, sr = sf.read(tmp_path / a.file, dtype="float32")
        assert sr == 24000 and len(x) == 24000 and 1e-3 < np.abs(x).max() < 0.99  # peak-limited, no clipping
    if len({c.split for c in clips}) == 2:
        assert read_keys(tmp_path).labels["key"] == [c.key for c in clips]


def test_real_size_configs_use_merts_cqt_and_tiny_the_kmeans_teacher():
    import yaml

    from tasks.audio import MERTPretraining  # noqa: F401  (the configs name it)

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "audio"
    for name in ("mert_95m.yaml", "mert_330m.yaml"):
        cqt = yaml.safe_load((root / name).read_text())["model"]["init_args"]["cqt_teacher"]["init_args"]
        assert (cqt["n_bins"], cqt["bins_per_octave"]) == (336, 48), name
    tiny = yaml.safe_load((root / "tiny.yaml").read_text())["model"]["init_args"]
    assert tiny["rvq_teacher"]["class_path"].endswith("KMeansTeacher")

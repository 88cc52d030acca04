"""tasks.embed.audio: `tessera embed` on audio files (one mean-pooled vector per file) and its bad inputs."""

import json

import pytest
import soundfile as sf
import torch
from audio_fixtures import (
    audio_encoder_folder,
    other_modality_folder,
    tone_folder,
    tones,
    user_error,
)
from safetensors.torch import load_file

import modalities
from modalities.audio.io import normalize
from modalities.audio.probe import layer_features
from tasks.cli import main as cli_main


def test_one_vector_per_file_equals_the_pooled_layer_and_bad_files_are_counted(tmp_path):
    enc = audio_encoder_folder(tmp_path)
    root = tone_folder(tmp_path, 3, 0.6)
    sf.write(root / "stereo_44k.flac", torch.stack([tones(1, 0.8, 44100)[0]] * 2, 1).numpy(), 44100)
    (root / "broken.wav").write_bytes(b"garbage" * 30)
    sf.write(root / "silent.wav", torch.zeros(12000).numpy(), 24000)
    out = tmp_path / "emb"
    assert cli_main(["embed", "--encoder", str(enc), str(root), "--out", str(out), "--no-normalize", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "audio" and summary["count"] == 4
    assert summary["skipped"] == {"audio unreadable": 1, "audio silent": 1}
    ids = [json.loads(line)["id"] for line in (out / "index.jsonl").read_text().splitlines()]
    vectors = load_file(out / "embeddings.safetensors")["embeddings"]  # (4, 64)
    model = modalities.load_encoder(enc)
    clip = tones(3, 0.6)[2]
    want = layer_features(model, [normalize(clip[None])[0]])[0, -1]  # last layer, mean over frames
    row = ids.index(str(root / "t2.wav"))
    assert torch.allclose(vectors[row], want, atol=1e-4)
    assert json.loads((out / "index.jsonl").read_text().splitlines()[ids.index(str(root / "stereo_44k.flac"))])[
        "seconds"] == pytest.approx(0.8, abs=1e-3)  # resampled to the encoder's 24 kHz


def test_long_files_are_pooled_over_chunks_and_a_chosen_layer(tmp_path):
    enc = audio_encoder_folder(tmp_path)
    root = tone_folder(tmp_path, 1, 1.0)
    whole, chunked, first = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert cli_main(["embed", "--encoder", str(enc), str(root), "--out", str(whole), "--quiet", "--no-normalize"]) == 0
    assert cli_main(["embed", "--encoder", str(enc), str(root), "--out", str(chunked), "--quiet", "--no-normalize",
                     "--audio-chunk-seconds", "0.5"]) == 0
    assert cli_main(["embed", "--encoder", str(enc), str(root), "--out", str(first), "--quiet", "--no-normalize",
                     "--audio-layer", "0"]) == 0
    a, b, c = (load_file(d / "embeddings.safetensors")["embeddings"][0] for d in (whole, chunked, first))
    # two halves see less context than the whole: close, not equal; layer 0 is another vector
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9 and not torch.allclose(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("case", ["missing", "empty", "text_files", "all_broken"])
def test_bad_audio_inputs_are_one_line_errors(tmp_path, capsys, case):
    enc = audio_encoder_folder(tmp_path)
    src = tmp_path / "in"
    if case != "missing":
        src.mkdir()
    if case == "text_files":
        (src / "notes.txt").write_text("not music\n")
    if case == "all_broken":
        (src / "a.wav").write_bytes(b"garbage" * 30)
    needle = {"missing": "does not exist", "empty": "holds no audio files", "text_files": "holds no audio files",
              "all_broken": "every input was skipped"}[case]
    user_error(capsys, ["embed", "--encoder", str(enc), str(src), "--out", str(tmp_path / "o"), "--quiet"],
               str(src), needle)


@pytest.mark.parametrize("case", ["other_modality", "corrupt_weights", "no_weights", "bad_layer"])
def test_bad_encoder_folders_and_options_are_one_line_errors(tmp_path, capsys, case):
    enc = audio_encoder_folder(tmp_path)
    root = tone_folder(tmp_path, 1, 0.5)
    target, extra = tmp_path / "bad", []
    other_modality_folder(enc, target)
    if case != "other_modality":
        raw = json.loads((target / "config.json").read_text())
        raw["meta"]["modality"] = "audio"
        (target / "config.json").write_text(json.dumps(raw))
    if case == "corrupt_weights":
        (target / "model.safetensors").write_bytes(b"\x00" * 40)
    if case == "no_weights":
        (target / "model.safetensors").unlink()
    if case == "bad_layer":
        extra = ["--audio-layer", "7"]
    needle = {"other_modality": "text encoder folder", "corrupt_weights": "model.safetensors", "no_weights": "model.safetensors",
              "bad_layer": "--audio-layer 7"}[case]
    user_error(capsys, ["embed", "--encoder", str(target), str(root), "--out", str(tmp_path / "o"), "--quiet",
                        "--modality", "audio", *extra], needle)


def test_embed_refuses_an_unknown_option(tmp_path, capsys):
    user_error(capsys, ["embed", "--encoder", str(tmp_path), "--audio-layers", "3"], "--audio-layers")

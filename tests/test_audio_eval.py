"""tasks.eval.audio: `tessera eval audio-probe` on an encoder folder (every layer vs baselines) and its bad inputs."""

import json

import pytest
import soundfile as sf
from audio_fixtures import audio_encoder_folder, other_modality_folder, tones, user_error

from modalities.audio.render import GM_FAMILIES, Note, write_text
from tasks.cli import main as cli_main


def note_set(tmp_path, per_class=6):
    """A rendered-set-shaped folder of sine 'notes': 3 pitches x 2 'families' (amplitudes), train and test."""
    from dataclasses import asdict

    folder = tmp_path / "notes"
    notes = []
    for k, x in enumerate(tones(3, 0.5)):
        for fam in (0, 1):
            for j in range(per_class):
                split = "test" if j >= per_class - 2 else "train"
                name = f"{split}/{GM_FAMILIES[fam]}/k{k}_{j}.wav"
                (folder / split / GM_FAMILIES[fam]).mkdir(parents=True, exist_ok=True)
                sf.write(folder / name, (x * (0.5 + fam) * (1 + 0.05 * j)).numpy(), 24000)
                notes.append(Note(name, 60 + k, fam * 8, fam, 100, split))
    write_text(folder / "labels.json", json.dumps([asdict(n) for n in notes]))
    return folder


def test_probe_writes_every_layer_against_its_baselines(tmp_path, capsys):
    enc = audio_encoder_folder(tmp_path)
    notes = note_set(tmp_path)
    (notes / "train" / "piano" / "k0_0.wav").write_bytes(b"broken" * 40)  # counted, not fatal
    out = tmp_path / "probe"
    assert cli_main(["eval", "audio-probe", "--encoder", str(enc), "--notes", str(notes), "--out", str(out),
                     "--mlp", "0", "--quiet"]) == 0
    r = json.loads((out / "probe.json").read_text())["sets"]["notes"]
    assert r["clips"] == 35 and r["skipped"] == {"unreadable": 1} and r["test"] == 12
    pitch = r["tasks"]["pitch"]["linear"]
    assert len(pitch["model"]) == len(pitch["random"]) == 3  # the frontend + 2 layers
    assert pitch["cqt"] == 1.0  # sines three semitones apart: the CQT separates them
    assert (out / "probe.png").stat().st_size > 0
    assert "beats all" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "empty", "file", "other_modality", "corrupt_weights", "no_weights"])
def test_probe_bad_encoder_folders_are_one_line_errors(tmp_path, capsys, case):
    enc = audio_encoder_folder(tmp_path)
    target = tmp_path / "bad"
    needle = str(target)
    if case == "empty":
        target.mkdir()
        needle = "config.json"
    elif case == "file":
        target.write_text("x")
    elif case == "other_modality":
        other_modality_folder(enc, target)
        needle = "text encoder folder"
    elif case in ("corrupt_weights", "no_weights"):
        other_modality_folder(enc, target)
        raw = json.loads((target / "config.json").read_text())
        raw["meta"]["modality"] = "audio"
        (target / "config.json").write_text(json.dumps(raw))
        if case == "corrupt_weights":
            (target / "model.safetensors").write_bytes(b"\x00" * 40)
            needle = "model.safetensors"
        else:
            (target / "model.safetensors").unlink()
            needle = "model.safetensors"
    user_error(capsys, ["eval", "audio-probe", "--encoder", str(target), "--notes", str(tmp_path), "--quiet"], needle)


@pytest.mark.parametrize("case", ["missing", "empty", "bad_labels"])
def test_probe_bad_note_sets_are_one_line_errors(tmp_path, capsys, case):
    enc = audio_encoder_folder(tmp_path)
    notes = tmp_path / "notes"
    needle = {"missing": "does not exist", "empty": "holds no labels.json", "bad_labels": "labels.json"}[case]
    if case != "missing":
        notes.mkdir()
    if case == "bad_labels":
        (notes / "labels.json").write_text('[{"file": "x.wav"}]')
    user_error(capsys, ["eval", "audio-probe", "--encoder", str(enc), "--notes", str(notes), "--quiet"],
               "--notes", needle)


@pytest.mark.parametrize("dead", ["train", "test"])
def test_probe_split_whose_files_all_fail_to_decode_is_a_one_line_error_naming_it(tmp_path, capsys, dead):
    enc = audio_encoder_folder(tmp_path)
    notes = note_set(tmp_path, per_class=3)
    for wav in (notes / dead).rglob("*.wav"):
        wav.write_bytes(b"broken" * 40)
    n = len(list((notes / dead).rglob("*.wav")))
    user_error(capsys, ["eval", "audio-probe", "--encoder", str(enc), "--notes", str(notes), "--mlp", "0", "--quiet"],
               "probe set notes", f"none of its {n} {dead} files decodes", f"unreadable: {n}")


def test_probe_refuses_an_unknown_option(tmp_path, capsys):
    user_error(capsys, ["eval", "audio-probe", "--encoder", str(tmp_path), "--layers", "3"], "--layers")

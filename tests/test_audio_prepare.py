"""tasks.prepare.audio: `tessera prepare audio-notes | audio-keys | audio-codes`, the default sets the
data module renders on first use, and their bad inputs."""

import json
from pathlib import Path

import pytest
import torch
from audio_fixtures import audio_encoder_folder, cached_soundfont, tone_folder, tones, user_error

from modalities.audio.teachers import RVQTeacher
from tasks.cli import main as cli_main
from tasks.data.audio import AudioFolderDataModule
from tasks.prepare import audio as prep

TINY = Path(__file__).resolve().parents[1] / "configs" / "audio" / "tiny.yaml"


def test_notes_job_renders_a_small_set_and_resumes_after_a_kill(tmp_path, monkeypatch, capsys):
    cached_soundfont(tmp_path / "cache")
    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "notes"
    argv = ["prepare", "audio-notes", "--out", str(out), "--programs-per-family", "2", "--low", "60", "--high", "62",
            "--quiet"]
    assert cli_main(argv) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) == 12 * 2 * 2 and {n["split"] for n in labels} == {"train", "test"}
    # a killed render: one file half-written under its .partial name, another missing, labels.json gone
    first = out / labels[0]["file"]
    first.rename(first.with_name(first.name + ".partial"))
    (out / labels[1]["file"]).unlink()
    (out / "labels.json").unlink()
    kept = out / labels[2]["file"]
    before = kept.stat().st_mtime_ns
    assert not prep.set_ready(out)
    assert cli_main(argv) == 0
    assert prep.set_ready(out) and first.is_file() and (out / labels[1]["file"]).is_file()
    assert kept.stat().st_mtime_ns == before  # finished files are kept
    assert "48 notes" in capsys.readouterr().out


def test_the_default_note_set_is_rendered_by_prepare_data_under_tessera_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cached_soundfont(cache)
    monkeypatch.setenv("TESSERA_CACHE", str(cache))
    small = prep.DEFAULT_SETS["audio/notes"][0], lambda d, progress=True: prep.prepare_notes(
        d, programs_per_family=2, low=60, high=61, progress=False)
    monkeypatch.setitem(prep.DEFAULT_SETS, "audio/notes", small)
    dm = AudioFolderDataModule("cache:audio/notes/train", val_fraction=0.2, crop_seconds=0.5)
    dm.prepare_data()
    assert prep.set_ready(cache / "audio" / "notes")
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 12  # 12 families x 1 training program x 1 pitch
    assert not prep.ensure_default_set("/some/user/folder")
    assert prep.default_set_of("cache:audio/keys") == ("audio/keys", cache / "audio" / "keys")


def test_code_precompute_resumes_and_counts_bad_files(tmp_path):
    from safetensors.torch import load_file

    root = tone_folder(tmp_path, 3, 0.5)
    (root / "broken.wav").write_bytes(b"garbage" * 20)
    t = RVQTeacher(num_codebooks=2, codebook_size=8, num_filters=4, hidden_size=16, num_lstm_layers=1)
    t.fit_codebooks(t.embed(torch.stack(tones(3, 0.5))).flatten(0, 1), iters=3)
    files = sorted(root.glob("t*.wav")) + [root / "broken.wav"]
    first = prep.precompute(t, files[:2], tmp_path / "codes", chunk_seconds=0.2, progress=False)
    done = prep.code_path(tmp_path / "codes", files[1])
    before = done.stat().st_mtime_ns
    second = prep.precompute(t, files, tmp_path / "codes", chunk_seconds=0.2, progress=False)  # resumed
    assert first.records == 2 and second.records == 1 and second.skipped == {"done_before": 2, "unreadable": 1}
    assert not list((tmp_path / "codes").glob("*.partial"))
    assert done.stat().st_mtime_ns == before
    codes = load_file(prep.code_path(tmp_path / "codes", root / "t0.wav"))["codes"]
    whole = t(torch.stack(tones(1, 0.5)))[0]
    assert codes.shape[0] == 2 and abs(codes.shape[1] - whole.shape[1]) <= 3
    manifest = json.loads((tmp_path / "codes" / "manifest.json").read_text())
    assert len(manifest["files"]) == 3 and list(manifest["skipped"].values()) == ["unreadable"]


def test_codes_job_reads_an_encodec_folder(tmp_path):
    from safetensors.torch import load_file

    root = tone_folder(tmp_path, 2, 0.5)
    t = RVQTeacher(num_codebooks=2, codebook_size=8, num_filters=4, hidden_size=16, num_lstm_layers=1)
    t.fit_codebooks(t.embed(torch.stack(tones(2, 0.5))).flatten(0, 1), iters=3)
    t.model.save_pretrained(tmp_path / "encodec")
    assert cli_main(["prepare", "audio-codes", str(root), "--out", str(tmp_path / "codes"), "--encodec",
                     str(tmp_path / "encodec"), "--num-codebooks", "2", "--quiet"]) == 0
    codes = load_file(prep.code_path(tmp_path / "codes", root / "t1.wav"))["codes"]
    assert torch.equal(codes.long(), t(torch.stack(tones(2, 0.5))[1:])[0])


@pytest.mark.parametrize("case", ["missing", "empty", "text_files", "all_broken"])
def test_codes_job_bad_audio_inputs_are_one_line_errors(tmp_path, capsys, case):
    t = RVQTeacher(num_codebooks=2, codebook_size=8, num_filters=4, hidden_size=16, num_lstm_layers=1)
    t.fit_codebooks(t.embed(torch.stack(tones(2, 0.5))).flatten(0, 1), iters=3)
    t.model.save_pretrained(tmp_path / "encodec")
    src = tmp_path / "in"
    if case != "missing":
        src.mkdir()
    if case == "text_files":
        (src / "notes.txt").write_text("not music\n")
    if case == "all_broken":
        (src / "a.wav").write_bytes(b"garbage" * 30)
    needle = {"missing": "does not exist", "empty": "holds no audio files", "text_files": "holds no audio files",
              "all_broken": "could be decoded"}[case]
    user_error(capsys, ["prepare", "audio-codes", str(src), "--out", str(tmp_path / "codes"), "--encodec",
                        str(tmp_path / "encodec"), "--num-codebooks", "2", "--quiet"], str(src), needle)


@pytest.mark.parametrize("case", ["missing_run", "not_a_run", "corrupt_ckpt", "missing_encodec", "encoder_folder"])
def test_codes_job_bad_teacher_sources_are_one_line_errors(tmp_path, capsys, case):
    root = tone_folder(tmp_path, 2, 0.5)
    if case == "missing_run":
        src, needle = ["--run", str(tmp_path / "nope")], "does not exist"
    elif case == "not_a_run":
        (tmp_path / "empty").mkdir()
        src, needle = ["--run", str(tmp_path / "empty")], "config.yaml"
    elif case == "corrupt_ckpt":
        log = tmp_path / "run"
        (log / "checkpoints").mkdir(parents=True)
        (log / "config.yaml").write_text(TINY.read_text())  # a valid config, a truncated checkpoint
        (log / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
        src, needle = ["--run", str(log / "checkpoints" / "last.ckpt")], "not a readable checkpoint"
    elif case == "missing_encodec":
        src, needle = ["--encodec", str(tmp_path / "nope")], "no EnCodec config.json"
    else:  # an audio *encoder* folder is not an EnCodec folder
        enc = audio_encoder_folder(tmp_path)
        src, needle = ["--encodec", str(enc)], str(enc)
    user_error(capsys, ["prepare", "audio-codes", str(root), "--out", str(tmp_path / "codes"), *src, "--quiet"], needle)


@pytest.mark.parametrize("job", ["audio-notes", "audio-keys", "audio-codes"])
def test_prepare_jobs_refuse_unknown_options_and_a_file_as_out(tmp_path, capsys, job):
    required = [str(tmp_path), "--out", str(tmp_path / "o"), "--encodec", str(tmp_path)] if job == "audio-codes" else []
    user_error(capsys, ["prepare", job, *required, "--no-such-option"], "--no-such-option")
    if job != "audio-codes":
        (tmp_path / "f").write_text("x")
        user_error(capsys, ["prepare", job, "--out", str(tmp_path / "f")], str(tmp_path / "f"), "is a file")


def test_notes_job_refuses_an_empty_pitch_range(capsys):
    user_error(capsys, ["prepare", "audio-notes", "--low", "70", "--high", "60"], "--low 70")

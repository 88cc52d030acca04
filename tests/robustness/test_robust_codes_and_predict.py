"""Bad inputs to the two commands that read a user's files with a trained model beside them:
`tessera prepare audio-codes AUDIO --encodec FOLDER` (every undecodable audio kind, alone and beside a good
file) and `tessera eval code-predict --model RUN PATHS` (a missing path, an empty folder, 0-byte, binary,
null-byte and undeclared-Latin-1 Python files, alone and beside a good file). Alone: status 2, one line
naming the input; beside a good file: status 0, the good one used, the bad one counted where the command
reports (manifest.json, the printed summary)."""

from __future__ import annotations

import json

import pytest
from materials import AUDIO_BAD, PY_BAD, code_finetune_run, encodec_folder, wav_bytes
from verdict import assert_user_error, run

GOOD_WAV = wav_bytes([3000 * ((i // 20) % 2) for i in range(4800)])  # 0.2 s of a square wave
GOOD_PY = "def scale(values, factor):\n    total = 0\n    for value in values:\n        total = total + value * factor\n    return total\n"
PY_KINDS = {name: PY_BAD[name] for name in ("py-0-byte.py", "py-binary-garbage.py", "py-null-bytes.py",
                                            "py-latin1-undeclared.py")}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return {"encodec": encodec_folder(root / "encodec"), "run": code_finetune_run(root / "run")}


def codes(good, src, out):
    return ["prepare", "audio-codes", src, "--encodec", good["encodec"], "--num-codebooks", "2", "--out", out,
            "--quiet"]


def predict(good, src, out):
    return ["eval", "code-predict", "--model", good["run"], src, "--out", out, "--quiet"]


# --- prepare audio-codes ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["audio-0-byte.wav", "audio-garbage.wav", "audio-truncated.flac",
                                  "audio-nan-samples.wav"])
def test_audio_codes_of_one_undecodable_file_is_one_line_naming_it(good, tmp_path, capsys, name):
    AUDIO_BAD[name](tmp_path / name)
    rc, _, err = run(capsys, codes(good, tmp_path / name, tmp_path / "codes"))
    assert_user_error(rc, err, name)


@pytest.mark.parametrize("name", list(AUDIO_BAD))
def test_audio_codes_counts_an_undecodable_file_beside_a_good_one(good, tmp_path, capsys, name):
    folder = tmp_path / "music"
    folder.mkdir()
    AUDIO_BAD[name](folder / name)
    (folder / "fine.wav").write_bytes(GOOD_WAV)
    rc, out, err = run(capsys, codes(good, folder, tmp_path / "codes"))
    assert rc == 0, err
    manifest = json.loads((tmp_path / "codes" / "manifest.json").read_text())
    assert len(manifest["files"]) == 1 and [k.rsplit("/", 1)[-1] for k in manifest["skipped"]] == [name], manifest
    assert "1 files" in out or "skipped" in out, out


def input_of_kind(tmp_path, kind: str, stray_kind: str, stray_name: str):
    """A path that holds nothing the command can use: missing, an empty folder, or (``stray_kind``)
    a folder with one text file of another kind."""
    src = tmp_path / f"in-{kind}"
    if kind != "missing":
        src.mkdir()
    if kind == stray_kind:
        (src / stray_name).write_text("nothing to use here\n")
    return src


@pytest.mark.parametrize("kind", ["missing", "empty-folder", "folder-of-text"])
def test_audio_codes_without_audio_is_one_line_naming_the_input(good, tmp_path, capsys, kind):
    src = input_of_kind(tmp_path, kind, "folder-of-text", "notes.txt")
    rc, _, err = run(capsys, codes(good, src, tmp_path / "codes"))
    assert_user_error(rc, err, src)


# --- eval code-predict ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PY_KINDS))
def test_code_predict_counts_a_bad_python_file_beside_a_good_one(good, tmp_path, capsys, name):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / name).write_bytes(PY_KINDS[name])
    (folder / "good.py").write_text(GOOD_PY)
    rc, out, err = run(capsys, predict(good, folder, tmp_path / "p.jsonl"))
    assert rc == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows if "bug_probability" in r] == ["scale"], rows
    assert "files skipped: {}" not in out, f"the bad file was not counted:\n{out}"


@pytest.mark.parametrize("name", list(PY_KINDS))
def test_code_predict_on_one_bad_python_file_is_refused_or_counted(good, tmp_path, capsys, name):
    (tmp_path / name).write_bytes(PY_KINDS[name])
    rc, out, err = run(capsys, predict(good, tmp_path / name, tmp_path / "p.jsonl"))
    if rc == 0:  # nothing scored: the printed summary must say why
        assert "Traceback" not in err and "0 functions scored" in out and "files skipped: {}" not in out, out
    else:
        assert_user_error(rc, err, name)


@pytest.mark.parametrize("kind", ["missing", "empty-folder", "folder-without-python"])
def test_code_predict_without_python_files_is_one_line_naming_the_input(good, tmp_path, capsys, kind):
    src = input_of_kind(tmp_path, kind, "folder-without-python", "README.md")
    rc, _, err = run(capsys, predict(good, src, tmp_path / "p.jsonl"))
    assert_user_error(rc, err, src)

"""Bad data files of every modality through the entry points that read them: item-history files (`tessera
eval recsys --data`, `tessera embed`, `tessera fit` with a recsys config, read_interactions), audio
(`tessera embed`, load_audio), radiographs (read_image / load_image_tensor), OpenI report XML (`tessera eval
cxr-retrieval --reports`, read_openi) and text (`tessera prepare text --corpus`, `tessera embed`).
Each: a one-line error naming the input (status 2, no traceback) or a counted skip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from materials import (
    AUDIO_BAD,
    IMAGE_BAD,
    RECSYS_BAD,
    RECSYS_GOOD,
    XML_BAD,
    audio_encoder_folder,
    float_wav,
    garbage,
    openi_folder,
    recsys_encoder_folder,
    text_encoder_folder,
    wav_bytes,
    xml_external_entity,
)
from verdict import assert_refused_or_counted, assert_user_error, call_library, run

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return {"root": root, "recsys": recsys_encoder_folder(root / "recsys-encoder"),
            "audio": audio_encoder_folder(root / "audio-encoder"), "text": text_encoder_folder(root / "text-encoder"),
            "reports": openi_folder(root / "reports")}


# --- item-history files ----------------------------------------------------------------------
RECSYS_ENTRIES = {
    "eval recsys --data": lambda f, g, t: ["eval", "recsys", "--run", g["recsys"], "--data", f, "--out", t / "r"],
    "embed": lambda f, g, t: ["embed", "--encoder", g["recsys"], f, "--out", t / "emb", "--quiet"],
}


XFAIL: dict[tuple[str, str], str] = {}  # (file, entry) pairs whose defect is not fixed yet


@pytest.mark.parametrize("entry", list(RECSYS_ENTRIES))
@pytest.mark.parametrize("name", list(RECSYS_BAD))
def test_a_bad_item_history_file_is_refused_or_counted(good, tmp_path, capsys, name, entry, request):
    if (name, entry) in XFAIL:
        request.applymarker(pytest.mark.xfail(strict=True, reason=XFAIL[name, entry]))
    path = tmp_path / name
    path.write_bytes(RECSYS_BAD[name])
    rc, out, err = run(capsys, RECSYS_ENTRIES[entry](path, good, tmp_path))
    assert_refused_or_counted(rc, out, err, name)


@pytest.mark.parametrize("name", list(RECSYS_BAD))
def test_read_interactions_refuses_or_counts_every_bad_row(tmp_path, name):
    from modalities.recsys import read_interactions

    path = tmp_path / name
    path.write_bytes(RECSYS_BAD[name])
    error = call_library(read_interactions, path)
    if error is not None:
        assert name in str(error)
        return
    inter = read_interactions(path)
    assert np.isfinite(np.asarray(inter.timestamps, dtype=float)).all(), "a non-finite timestamp was kept"
    lines = [ln for ln in RECSYS_BAD[name].splitlines() if ln.strip()]
    assert inter.stats.records + sum(inter.stats.skipped.values()) == len(lines), "a row was neither kept nor counted"


@pytest.mark.parametrize("name", ["recsys-0-byte.data", "recsys-header-only.csv"])
def test_fit_on_a_bad_item_history_file_is_one_line(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(RECSYS_BAD[name])
    rc, _, err = run(capsys, ["fit", "--config", ROOT / "configs" / "recsys" / "bert4rec_tiny.yaml",
                              "--data.init_args.dataset", path, "--trainer.fast_dev_run", "true",
                              "--trainer.default_root_dir", tmp_path / "run", "--trainer.logger", "false"])
    assert_user_error(rc, err, name)


def test_good_rows_beside_bad_ones_are_kept_and_the_bad_ones_counted(good, tmp_path, capsys):
    path = tmp_path / "mixed.data"
    path.write_text(RECSYS_GOOD + "7\t3\t5\tnan\n1\t2\n" + RECSYS_GOOD.splitlines(keepends=True)[0])
    rc, out, _ = run(capsys, RECSYS_ENTRIES["embed"](path, good, tmp_path))
    assert rc == 0 and "wrote 6 x 16 recsys embeddings" in out, out
    assert "skipped" in out


# --- audio -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(AUDIO_BAD))
def test_an_undecodable_audio_file_is_counted_by_embed(good, tmp_path, capsys, name):
    folder = tmp_path / "audio"
    folder.mkdir()
    AUDIO_BAD[name](folder / name)
    (folder / "fine.wav").write_bytes(wav_bytes([3000 * ((i // 20) % 2) for i in range(4800)]))
    rc, out, err = run(capsys, ["embed", "--encoder", good["audio"], folder, "--out", tmp_path / "emb", "--quiet"])
    assert rc == 0, err
    assert json.loads((tmp_path / "emb" / "summary.json").read_text())["count"] == 1
    assert "skipped 1 input(s)" in out


@pytest.mark.parametrize("name", list(AUDIO_BAD))
def test_load_audio_refuses_an_undecodable_file_naming_it(tmp_path, name):
    from modalities.audio.io import load_audio

    AUDIO_BAD[name](tmp_path / name)
    error = call_library(load_audio, tmp_path / name)
    assert error is not None and name in str(error), error


def test_a_float_wav_beyond_full_scale_is_read_within_minus_one_to_one(tmp_path):
    from modalities.audio.io import load_audio

    x = load_audio(float_wav(tmp_path / "loud.wav", 8.0))
    assert np.abs(x).max() <= 1.0


def test_a_wav_with_no_samples_is_not_called_silent(tmp_path):
    from modalities.audio.io import load_audio

    AUDIO_BAD["audio-0-samples.wav"](tmp_path / "empty.wav")
    error = call_library(load_audio, tmp_path / "empty.wav")
    assert error is not None and "silent" not in str(error), error


# --- radiographs -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(IMAGE_BAD))
def test_an_undecodable_radiograph_is_one_error_naming_it(tmp_path, name):
    from modalities.cxr.images import load_image_tensor, read_image

    IMAGE_BAD[name](tmp_path / name)
    for fn in (read_image, load_image_tensor):
        error = call_library(fn, tmp_path / name)
        assert error is not None and name in str(error), error
        assert "\n" not in str(error).strip()


def test_a_truncated_dicom_is_not_sent_to_jpeg_codecs(tmp_path):
    from modalities.cxr.images import read_image

    IMAGE_BAD["image-truncated.dcm"](tmp_path / "cut.dcm")
    error = call_library(read_image, tmp_path / "cut.dcm")
    assert error is not None and "codec" not in str(error).lower() and "jpeg" not in str(error).lower(), error


# --- OpenI report XML --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(XML_BAD))
def test_a_bad_report_xml_among_good_ones_is_counted(good, tmp_path, capsys, name):
    import shutil

    folder = tmp_path / "reports"
    shutil.copytree(good["reports"], folder)
    XML_BAD[name](folder / name)
    rc, out, err = run(capsys, ["eval", "cxr-retrieval", "--reports", folder, "--out", tmp_path / "ret"])
    assert rc == 0, err
    read = json.loads((tmp_path / "ret" / "retrieval.json").read_text())["data"]
    assert "not an OpenI report XML" in json.dumps(read), read


@pytest.mark.parametrize("name", list(XML_BAD))
def test_a_folder_of_only_bad_report_xml_is_one_line(tmp_path, capsys, name):
    folder = tmp_path / f"only-{name}"
    folder.mkdir()
    XML_BAD[name](folder / name)
    rc, _, err = run(capsys, ["eval", "cxr-retrieval", "--reports", folder, "--out", tmp_path / "ret"])
    assert_user_error(rc, err, folder.name)


def test_an_external_entity_is_never_read(tmp_path):
    from modalities.cxr.reports import read_openi

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "1.xml").write_bytes(xml_external_entity(secret))
    try:
        reports = list(read_openi(tmp_path / "r"))
    except ValueError:
        reports = []
    assert all("TOP-SECRET" not in r.text for r in reports)


# --- text ------------------------------------------------------------------------------------
TEXT_BAD = {"text-0-byte.txt": b"", "text-binary.txt": garbage(), "text-only-blank-lines.txt": b"\n \n\t\n"}


@pytest.mark.parametrize("name", list(TEXT_BAD))
def test_a_bad_text_file_is_refused_or_counted(good, tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(TEXT_BAD[name])
    for argv in (["prepare", "text", "--corpus", path, "--cache", tmp_path / "cache"],
                 ["embed", "--encoder", good["text"], path, "--out", tmp_path / "emb", "--quiet"]):
        rc, out, err = run(capsys, argv)
        assert_refused_or_counted(rc, out, err, name)


def test_fit_on_a_missing_text_corpus_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-corpus"
    rc, _, err = run(capsys, ["fit", "--config", ROOT / "configs" / "text" / "tiny.yaml", "--data.init_args.corpus",
                              missing, "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", tmp_path / "run",
                              "--trainer.logger", "false"])
    assert_user_error(rc, err, missing.name)

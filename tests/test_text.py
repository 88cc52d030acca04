"""The text modality's jobs: `tessera fit` on configs/text/tiny.yaml writes an encoder folder that
`tessera embed` reads on its own; `tessera prepare text` builds the cache and names bad inputs."""

import json
from pathlib import Path

import pytest

from tasks.cli import main as tessera

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "text" / "tiny.yaml"


def test_fit_then_embed_with_the_runs_encoder_folder(text_corpus, tmp_path):
    from safetensors.torch import load_file

    root = tmp_path / "run"
    assert tessera(["fit", "--config", str(TINY), "--data.init_args.corpus", str(text_corpus),
                    "--data.init_args.cache_dir", str(tmp_path / "cache"), "--data.init_args.vocab_size", "300",
                    "--data.init_args.max_length", "32", "--data.init_args.batch_size", "8",
                    "--data.init_args.val_fraction", "0.2", "--trainer.max_steps", "3", "--trainer.val_check_interval",
                    "3", "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]) in (0, None)
    folder = root / "lightning_logs" / "version_0" / "encoder"
    raw = json.loads((folder / "config.json").read_text())
    assert raw["meta"]["modality"] == "text" and (folder / "tokenizer.json").is_file()
    (tmp_path / "some.txt").write_text("the model reads a sequence\n\nthe optimizer lowers the loss\n")
    out = tmp_path / "emb"
    assert tessera(["embed", "--encoder", str(folder), str(tmp_path / "some.txt"), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "text" and summary["count"] == 2 and summary["dim"] == 128
    vectors = load_file(out / "embeddings.safetensors")["embeddings"]
    assert vectors.shape == (2, 128) and not (vectors[0] == vectors[1]).all()


def test_prepare_text_builds_corpus_and_tokenizer_the_config_then_finds(text_corpus, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert tessera(["prepare", "text", "--corpus", str(text_corpus), "--vocab-size", "300", "--max-length", "32",
                    "--val-fraction", "0.2", "--cache", str(cache)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["train_documents"] > 0 and stats["val_documents"] > 0
    from tasks.data import MaskedTextDataModule

    dm = MaskedTextDataModule(corpus=str(text_corpus), vocab_size=300, max_length=32, val_fraction=0.2,
                              cache_dir=str(cache))
    assert dm.tokenizer_file.is_file() and dm._ids_file().is_file()  # what fit would otherwise build
    assert not list(cache.rglob("*.partial"))


def test_prepare_text_bad_inputs_are_one_line_and_status_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF")
    for argv, expected in (
        (["--corpus", str(tmp_path / "nope")], "does not exist"),
        (["--corpus", str(empty)], "holds no .txt files"),
        (["--corpus", str(audio)], "holds no .txt files"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ):
        assert tessera(["prepare", "text", *argv, "--cache", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert expected in err.strip().splitlines()[-1] and "Traceback" not in err, err


@pytest.mark.slow
def test_prepare_text_on_the_stdlib_docstrings(tmp_path, capsys):
    assert tessera(["prepare", "text", "--vocab-size", "4096", "--cache", str(tmp_path)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["train_documents"] > 5_000 and stats["tokenizer_vocab_size"] == 4096

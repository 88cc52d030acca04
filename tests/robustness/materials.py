"""Bad inputs, written by the tests in the exact public formats, and the good things they are damaged from.

Every ``bad_*`` function writes one input into a folder and returns its path; its name (and the
file's) names the kind, so an error message can be checked for naming the input. ``PAYLOAD`` is
what a malicious pickle would create if anything unpickled it.
"""

from __future__ import annotations

import json
import pickle
import struct
import wave
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "PAYLOAD_RAN"  # created by unpickling an Evil object: the proof that a file ran code

TEXT_TINY = dict(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                 max_position_embeddings=32, attention_backend="unpadded")


class Evil:
    """Unpickling this creates PAYLOAD (a harmless stand-in for `os.system`)."""

    def __reduce__(self):
        return (Path.touch, (PAYLOAD,))


def evil_pickle(path: Path, obj_around=lambda e: {"state_dict": {}, "hyper_parameters": e}) -> Path:
    """A pickle whose unpickling runs code (the classic __reduce__ payload), as torch.save would frame it
    too (a zip with data.pkl) when ``path`` ends in .ckpt / .pt / .bin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj_around(Evil()), path)  # torch.save pickles it: a zip archive holding data.pkl
    return path


def raw_evil_pickle(path: Path) -> Path:
    """The same payload as a bare pickle stream (no zip): what `pickle.dump` writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": Evil()}))
    return path


# --- good materials ------------------------------------------------------------------------
def text_tokenizer(path: Path) -> Path:
    from modalities.text.tokenizer import train_wordpiece

    words = "the model reads tokens and predicts masked ones from context while loss falls".split()
    train_wordpiece([" ".join(words[i:] + words[:i]) for i in range(len(words))], TEXT_TINY["vocab_size"], path)
    return path


def text_encoder_folder(folder: Path) -> Path:
    """A tiny BERT text encoder folder (config.json + model.safetensors + tokenizer.json)."""
    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.hub import save_encoder

    torch.manual_seed(0)
    save_encoder(TokenEncoder(TokenEncoderConfig(**TEXT_TINY)), folder, meta={"modality": "text"})
    text_tokenizer(folder / "tokenizer.json")
    return folder


def recsys_encoder_folder(folder: Path, items: int = 30) -> Path:
    """A tiny BERT4Rec folder over items "1".."30" (+ item_ids.json)."""
    import modalities.recsys  # noqa: F401  (registers bert4rec)
    from modalities.hub import save_encoder
    from modalities.recsys.model import BERT4Rec, BERT4RecConfig

    torch.manual_seed(0)
    model = BERT4Rec(BERT4RecConfig(num_items=items, max_length=16, hidden_size=16, num_layers=1,
                                    intermediate_size=32))
    save_encoder(model, folder, meta={"modality": "recsys"})
    (folder / "item_ids.json").write_text(json.dumps({str(i): i for i in range(1, items + 1)}))
    return folder


def audio_encoder_folder(folder: Path) -> Path:
    from modalities.audio import create_audio_encoder
    from modalities.hub import save_encoder

    torch.manual_seed(0)
    return save_encoder(create_audio_encoder("mert-tiny"), folder, meta={"modality": "audio", "sample_rate": 24000})


def code_encoder_folder(folder: Path) -> Path:
    from modalities import TokenEncoder, TokenEncoderConfig
    from modalities.code import CodeTokenizer, save_code_encoder

    src = ["def area(width, height):\n    total = width * height\n    return total\n"] * 3
    tok = CodeTokenizer.train(src, 200)
    torch.manual_seed(0)
    enc = TokenEncoder(TokenEncoderConfig(**{**TEXT_TINY, "vocab_size": tok.vocab_size}))
    return save_code_encoder(enc, tok, folder, meta={"modality": "code"})


def text_run(root: Path) -> Path:
    """A run folder as `tessera fit` leaves it (lightning_logs/version_0/config.yaml + checkpoints/last.ckpt),
    of a tiny masked-LM system, without training: the weights are the fresh system's."""
    from tasks.runs import instantiate

    log = root / "lightning_logs" / "version_0"
    (log / "checkpoints").mkdir(parents=True)
    (root / "corpus").mkdir()
    words = "the model reads tokens and predicts masked ones from context while loss falls".split()
    for k in range(2):
        (root / "corpus" / f"part{k}.txt").write_text("\n\n".join(" ".join(words[i:] + words[:i]) for i in range(12)))
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(root), "max_steps": 1, "enable_progress_bar": False},
        "model": {"class_path": "tasks.text.MaskedLMSystem",
                  "init_args": {"encoder": {"class_path": "modalities.TokenEncoder",
                                            "init_args": {"config": TEXT_TINY}}}},
        "data": {"class_path": "tasks.data.MaskedTextDataModule",
                 "init_args": {"corpus": str(root / "corpus"), "vocab_size": TEXT_TINY["vocab_size"],
                               "max_length": 16, "batch_size": 2, "val_fraction": 0.5,
                               "cache_dir": str(root / "cache")}},
    }
    (log / "config.yaml").write_text(yaml.safe_dump(config))
    system = instantiate(config, "model")
    import lightning as L

    torch.save({"state_dict": system.state_dict(), "global_step": 0, "epoch": 0,
                "pytorch-lightning_version": L.__version__}, log / "checkpoints" / "last.ckpt")
    return root


# --- damage --------------------------------------------------------------------------------
def good_inputs(root: Path) -> Path:
    """The well-formed inputs every entry point's bad-input rows are set against: a Python file, a WAV,
    an item-history file, an empty CuBERT-style benchmark and OpenI reports."""
    (root / "f.py").write_text("def f(x):\n    return x + 1\n")
    (root / "tone.wav").write_bytes(wav_bytes([1000 * (i % 7) for i in range(4800)]))
    (root / "ratings.data").write_text("".join(f"{u}\t{i}\t5\t{10 * i}\n" for u in range(1, 4) for i in range(1, 9)))
    bench = root / "benchmark" / "variable_misuse"
    bench.mkdir(parents=True)
    for split in ("train", "valid", "eval", "test"):
        (bench / f"{split}.jsonl").write_text("")
    openi_folder(root / "reports")
    return root


def garbage(n: int = 4096, seed: int = 0) -> bytes:
    return bytes(torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).tolist())


def truncate(path: Path, keep: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: max(1, int(len(raw) * keep))])
    return path


def flip_byte(path: Path, at: int = -100) -> Path:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))
    return path


def nan_safetensors(path: Path) -> Path:
    """Rewrite a safetensors file with one NaN weight and no checksum to catch it (a diverged export)."""
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[name][0, 0] = float("nan")
    save_file(state, path)
    raw = json.loads((path.parent / "config.json").read_text())
    raw.pop("checksum", None)
    (path.parent / "config.json").write_text(json.dumps(raw))
    return path


# encoder folder damage: name -> function(folder) applied to a copy of a good encoder folder
def _cfg(folder: Path) -> Path:
    return folder / "config.json"


def _weights(folder: Path) -> Path:
    return folder / "model.safetensors"


def _hf_bert_missing_field(folder: Path) -> None:
    _cfg(folder).write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 64}))


def _config_shape_mismatch(folder: Path) -> None:
    raw = json.loads(_cfg(folder).read_text())
    raw["config"]["hidden_size"] *= 2
    _cfg(folder).write_text(json.dumps(raw))


def _evil_bin(folder: Path) -> None:
    _weights(folder).unlink()
    evil_pickle(folder / "pytorch_model.bin", lambda e: {"weight": e})


def _raw_evil_bin(folder: Path) -> None:
    _weights(folder).unlink()
    raw_evil_pickle(folder / "pytorch_model.bin")


def _garbage_bin(folder: Path) -> None:
    _weights(folder).unlink()
    (folder / "pytorch_model.bin").write_bytes(garbage())


def _set_config(value):
    def damage(folder: Path) -> None:
        _cfg(folder).write_text(value)
    return damage


ENCODER_DAMAGE = {
    "safetensors-0-byte": lambda f: _weights(f).write_bytes(b""),
    "safetensors-truncated": lambda f: truncate(_weights(f)),
    "safetensors-garbage": lambda f: _weights(f).write_bytes(garbage()),
    "safetensors-flipped-byte": lambda f: flip_byte(_weights(f)),
    "safetensors-nan": lambda f: nan_safetensors(_weights(f)),
    "weights-missing": lambda f: _weights(f).unlink(),
    "config-a-list": _set_config("[1, 2, 3]"),
    "config-not-json": _set_config("{not json"),
    "config-0-byte": _set_config(""),
    "config-binary": lambda f: _cfg(f).write_bytes(garbage(256)),
    "config-missing": lambda f: _cfg(f).unlink(),
    "config-unknown-model-type": _set_config(json.dumps({"model_type": "no-such-model"})),
    "config-unknown-architecture": _set_config(json.dumps({"format": "tessera", "architecture": "nope",
                                                           "config": {}})),
    "config-tessera-without-config": _set_config(json.dumps({"format": "tessera", "architecture": "token_encoder"})),
    "config-hf-missing-field": _hf_bert_missing_field,
    "config-shape-mismatch": _config_shape_mismatch,
    "bin-pickle-payload": _evil_bin,
    "bin-raw-pickle-payload": _raw_evil_bin,
    "bin-garbage": _garbage_bin,
}


# checkpoint damage: name -> function(ckpt path)
def _nan_ckpt(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.dim() == 2)
    ckpt["state_dict"][name][0, 0] = float("nan")
    torch.save(ckpt, path)


def _wrong_keys_ckpt(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {"not.a.weight": torch.zeros(2)}
    torch.save(ckpt, path)


def _bare_state_dict_ckpt(path: Path) -> None:
    """The system's weights alone, as a plain torch.save of a state dict (not a Lightning checkpoint)."""
    torch.save(torch.load(path, weights_only=True)["state_dict"], path)


CKPT_DAMAGE = {
    "ckpt-0-byte": lambda p: p.write_bytes(b""),
    "ckpt-truncated": lambda p: truncate(p),
    "ckpt-garbage": lambda p: p.write_bytes(garbage()),
    "ckpt-pickle-payload": lambda p: evil_pickle(p),
    "ckpt-raw-pickle-payload": lambda p: raw_evil_pickle(p),
    "ckpt-nan": _nan_ckpt,
    "ckpt-a-list": lambda p: torch.save([torch.zeros(1)], p),
    "ckpt-wrong-keys": _wrong_keys_ckpt,
    "ckpt-bare-state-dict": _bare_state_dict_ckpt,
}


# --- data files ----------------------------------------------------------------------------
RECSYS_GOOD = "".join(f"{u}\t{i}\t5\t{100 * u + k}\n" for u in range(1, 7) for k, i in enumerate(range(1 + u, 10 + u)))
RECSYS_BAD = {
    "recsys-0-byte.data": b"",
    "recsys-header-only.csv": b"user_id,item_id,rating,timestamp\n",
    "recsys-ragged.data": b"1\t2\n3\n4\t5\t6\t7\t8\t9\n",
    "recsys-non-numeric.data": b"alice\tbob\tfive\tyesterday\n" * 5,
    "recsys-nan-timestamps.data": "".join(f"1\t{i}\t5\t{t}\n" for i, t in
                                          zip(range(1, 8), ["nan", "inf", "-inf", "1", "2", "nan", "3"], strict=True)
                                          ).encode(),
    "recsys-binary.data": garbage(2048),
    "recsys-huge-line.data": b"1\t" + b"9" * 2_000_000 + b"\t5\t1\n",
    "recsys-only-duplicates.data": b"1\t2\t5\t10\n" * 20,
}


def wav_bytes(samples, rate: int = 24000, width: int = 2) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(s)) for s in samples))
    return buf.getvalue()


def float_wav(path: Path, value: float, n: int = 2400) -> Path:
    import soundfile as sf

    sf.write(path, torch.full((n,), value).numpy(), 24000, subtype="FLOAT")
    return path


AUDIO_BAD = {
    "audio-0-byte.wav": lambda p: p.write_bytes(b""),
    "audio-garbage.wav": lambda p: p.write_bytes(garbage()),
    "audio-header-only.wav": lambda p: p.write_bytes(wav_bytes([])[:44]),
    "audio-0-samples.wav": lambda p: p.write_bytes(wav_bytes([])),
    "audio-truncated.flac": lambda p: (_flac(p), truncate(p, 0.3)),
    "audio-text-as.mp3": lambda p: p.write_text("this is not audio\n"),
    "audio-nan-samples.wav": lambda p: float_wav(p, float("nan")),
}


def _flac(path: Path) -> Path:
    import soundfile as sf

    sf.write(path, (0.3 * torch.sin(torch.arange(24000) / 10)).numpy(), 24000)
    return path


def png_bytes(w: int = 8, h: int = 8) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (w, h), 128).save(buf, format="PNG")
    return buf.getvalue()


def png_bomb_header() -> bytes:
    """A PNG whose header claims 100000 x 100000 pixels (a decompression bomb by its size alone)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def dicom_truncated(path: Path) -> Path:
    """A real DICOM (pydicom's own writer, 64 x 64 MONOCHROME2) cut before its pixel data ends."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return truncate(path, 0.6)


IMAGE_BAD = {
    "image-0-byte.png": lambda p: p.write_bytes(b""),
    "image-garbage.png": lambda p: p.write_bytes(garbage()),
    "image-truncated.png": lambda p: p.write_bytes(png_bytes(64, 64)[:60]),
    "image-text-as.jpg": lambda p: p.write_text("not an image"),
    "image-bomb-header.png": lambda p: p.write_bytes(png_bomb_header()),
    "image-truncated.dcm": dicom_truncated,
    "image-garbage-after-preamble.dcm": lambda p: p.write_bytes(b"\0" * 128 + b"DICM" + garbage(512)),
}

XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<eCitation><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">&lol9;</AbstractText>
<AbstractText Label="IMPRESSION">&lol9;</AbstractText>
</Abstract></Article></MedlineCitation></eCitation>
"""


def xml_external_entity(secret: Path) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
            '<eCitation><MedlineCitation><Article><Abstract>'
            '<AbstractText Label="FINDINGS">&xxe; heart normal</AbstractText>'
            '<AbstractText Label="IMPRESSION">&xxe; no acute disease</AbstractText>'
            '</Abstract></Article></MedlineCitation></eCitation>\n').encode()


XML_BAD = {
    "xml-bomb.xml": lambda p: p.write_bytes(XML_BOMB),
    "xml-malformed.xml": lambda p: p.write_bytes(b"<eCitation><AbstractText Label='FINDINGS'>unclosed"),
    "xml-0-byte.xml": lambda p: p.write_bytes(b""),
    "xml-binary.xml": lambda p: p.write_bytes(garbage()),
}

PY_BAD = {
    "py-no-trailing-newline.py": b"def f(x):\n    return x + 1",
    "py-binary-garbage.py": garbage(),
    "py-null-bytes.py": b"def f():\n    return '\x00'\n",
    "py-latin1-undeclared.py": "def f():\n    return 'caf\xe9'\n".encode("latin-1"),
    "py-huge-line.py": b"x = '" + b"a" * 200_000 + b"'\n",  # a 200 kB string on one line
    "py-huge-identifier.py": b"x" * 200_000 + b" = 1\n",
    "py-long-expression.py": b"x = " + b"1 + " * 25_000 + b"1\n",  # 50 k tokens on one line
    "py-deep-brackets.py": b"x = " + b"(" * 5000 + b"1" + b")" * 5000 + b"\n",
    "py-unterminated-string.py": b"def f():\n    s = '''never closed\n    return s\n",
    "py-bad-dedent.py": b"def f():\n        x = 1\n    return x\n",
    "py-cr-only.py": b"def f(x):\r    return x\r",
    "py-0-byte.py": b"",
    "py-bad-cookie.py": b"# -*- coding: no-such-codec -*-\ndef f():\n    pass\n",
    "py-python2.py": b"def f():\n    print `x`\n    exec 'y'\n",
}


def openi_xml(uid: str, findings: str, impression: str) -> bytes:
    """One OpenI report in its published layout (eCitation > MedlineCitation > Article > Abstract)."""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<eCitation><uId id="{uid}"/><MedlineCitation><Article>'
            f'<Abstract><AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article></MedlineCitation>'
            '<MeSH><major>normal</major></MeSH></eCitation>\n').encode()


def openi_folder(folder: Path, n: int = 40) -> Path:
    """``n`` small OpenI reports (some land in every split: the split is a hash of the id)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i + 1}.xml").write_bytes(openi_xml(f"CXR{i + 1}", f"the heart size {i} is normal lungs clear",
                                                       f"no acute disease {i}"))
    return folder


def code_finetune_run(root: Path) -> Path:
    """A run folder as `tessera fit --config configs/code/varmisuse_tiny.yaml` leaves it (config.yaml +
    checkpoints/last.ckpt), of a tiny bug classifier over a code tokenizer trained here, without training:
    what `tessera eval code-predict --model` reads."""
    from modalities.code import CodeTokenizer
    from tasks.runs import instantiate

    log = root / "lightning_logs" / "version_0"
    (log / "checkpoints").mkdir(parents=True)
    src = ["def area(width, height):\n    total = width * height\n    return total\n"] * 3
    tok = CodeTokenizer.train(src, 200)
    tok.save(root / "tok")
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(root), "max_steps": 1},
        "model": {"class_path": "tasks.code.CodeClassifierSystem",
                  "init_args": {"num_classes": 2, "encoder": {
                      "class_path": "modalities.TokenEncoder",
                      "init_args": {"config": {**TEXT_TINY, "vocab_size": tok.vocab_size, "max_position_embeddings": 64}}}}},
        "data": {"class_path": "tasks.data.code.CodeTaskDataModule",
                 "init_args": {"task": "variable_misuse", "benchmark": str(root / "bench"),
                               "tokenizer": str(root / "tok"), "max_length": 64, "batch_size": 2}},
    }
    (log / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    system = instantiate(config, "model")
    import lightning as L

    torch.save({"state_dict": system.state_dict(), "global_step": 0, "epoch": 0,
                "pytorch-lightning_version": L.__version__}, log / "checkpoints" / "last.ckpt")
    return root


def encodec_folder(folder: Path) -> Path:
    """A tiny EnCodec (RVQ-VAE) folder in transformers' layout, k-means codebooks fitted on a tone: what
    `tessera prepare audio-codes --encodec` reads."""
    from modalities.audio.teachers import RVQTeacher

    torch.manual_seed(0)
    t = RVQTeacher(num_codebooks=2, codebook_size=8, num_filters=4, hidden_size=16, num_lstm_layers=1)
    tone = 0.3 * torch.sin(torch.arange(12000) / 10)[None]
    t.fit_codebooks(t.embed(tone).flatten(0, 1), iters=3)
    t.model.save_pretrained(folder)
    return folder

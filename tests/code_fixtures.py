"""Shared inputs of the code tests: sample sources, a toy CuBERT vocabulary, tiny encoders, a small
benchmark written from generated functions (imported by tests/test_code_*.py, as cxr_fixtures.py)."""

import json

import pytest

from modalities import TokenEncoder, TokenEncoderConfig
from modalities.code import CodeTokenizer, exception_vocabulary, extract_functions, generate

SAMPLE = '''import os  # a comment


def area(width, height):
    """Area of a rectangle."""
    result = width * height  # trailing comment
    if result < 0:
        raise ValueError("negative")
    return result


class Box:
    def scale(self, factor, offset):
        """Scale the box by a factor."""
        try:
            total = self.size * factor - offset
        except TypeError:
            total = offset
        return total
'''


VARIANTS = [
    "def f{i}(items, limit):\n    count = 0\n    for item in items:\n        if item > limit and count < 10:\n"
    "            count = count + 1\n    return count - limit\n",
    "def g{i}(path, mode):\n    \"\"\"Open a file at path in mode and read it all.\"\"\"\n    try:\n        handle = open(path, mode)\n"
    "    except OSError:\n        return None\n    data = handle.read()\n    return data[0] / len(data)\n",
    "def h{i}(key, table):\n    \"\"\"Look the key up in the table or return a default.\"\"\"\n    try:\n        value = table[key]\n"
    "    except KeyError:\n        value = key * 2 % 7\n    return value >= key\n",
]


def module_source(n: int = 30, offset: int = 0) -> str:
    return "\n\n".join(VARIANTS[(i + offset) % 3].format(i=i) for i in range(n))


def cubert_vocab_file(path):
    subtokens = ["<pad>_", "<EOS>_", "[CLS]_", "[SEP]_", "[MASK]_", "[UNK]_", "\\u\\u\\uNEWLINE\\u\\u\\u_",
                 "\\u\\u\\uNL\\u\\u\\u_", "\\u\\u\\uDEDENT\\u\\u\\u_", "def_", "return_", "(_", ")_", ":_", ",_", "+_", "=_", "    _",
                 "foo", "\\ubar_", "x_", "y_", "a", "b", "c", "\\u", "_", "1", "\\\\"]
    path.write_text("".join(f"'{s}'\n" for s in subtokens), encoding="utf-8")
    return path


def tiny_encoder(vocab=300):
    return TokenEncoder(TokenEncoderConfig(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2,
                                           intermediate_size=64, max_position_embeddings=128, attention_backend="unpadded"))


def make_functions():
    fns = []
    for p in range(6):
        fns += list(extract_functions(module_source(40, offset=p), f"pkg{p}", f"pkg{p}.py"))
    return fns


def write_benchmark_dir(tmp_path, functions, tasks=("variable_misuse", "variable_misuse_repair", "function_docstring")):
    """(benchmark folder, tokenizer folder) from ``functions``: half train, the other half valid and test."""
    out = tmp_path / "bench"
    exc = exception_vocabulary(functions)
    for task in tasks:
        (out / task).mkdir(parents=True)
        for split, part in (("train", functions[: len(functions) // 2]), ("valid", functions[len(functions) // 2 :]),
                            ("test", functions[len(functions) // 2 :])):
            rows = generate(task, part, seed=0, exceptions=exc, split=split)
            (out / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = CodeTokenizer.train([f.source for f in functions], 300)
    tok.save(tmp_path / "tok")
    return out, tmp_path / "tok"


TINY = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
            max_position_embeddings=128, attention_backend="unpadded")


def write_manifest_corpus(folder, n_packages=8, functions_per_file=12):
    """A small corpus folder (package p0 is valid, p1 test, the rest train) with its manifest.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(n_packages):
        path = folder / f"m{p}.py"
        path.write_text(module_source(functions_per_file, offset=p))
        split = {0: "valid", 1: "test"}.get(p, "train")
        rows.append({"path": str(path), "package": f"p{p}", "split": split, "hash": f"h{p}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_run(folder, system, model: dict, data: dict | None = None):
    """A run folder as `tessera fit` leaves it, for tasks.runs.load_system: config.yaml (model and data
    sections) and checkpoints/last.ckpt (the state dict; read back with weights_only=True)."""
    import torch
    import yaml

    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    cfg = {"model": model, **({"data": data} if data else {})}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.save({"state_dict": system.state_dict()}, folder / "checkpoints" / "last.ckpt")
    return folder


@pytest.fixture(scope="module")
def functions():
    """Functions of the fixture module, one benchmark's worth (module-scoped: generation takes a moment)."""
    return make_functions()


@pytest.fixture
def benchmark_dir(tmp_path, functions):
    """A benchmark folder in the generator's layout, written from ``functions``."""
    return write_benchmark_dir(tmp_path, functions)

"""A minimal writer of TensorFlow checkpoints (tensor bundle V2), for tests that must not need TF.

Writes what TF's ``BundleWriter`` writes (tensorflow/core/util/tensor_bundle/tensor_bundle.cc):
``PREFIX.data-00000-of-00001`` with every tensor's little-endian bytes, and ``PREFIX.index``, a
LevelDB-format table (uncompressed blocks of prefix-compressed entries with a restart array, each
block followed by a type byte and a masked crc32c; an index block of block handles; a 48-byte footer
with the magic number) mapping "" -> BundleHeaderProto and each name -> BundleEntryProto. Written
independently of ``modalities.tf_bundle`` (its own byte-at-a-time crc32c and protobuf encoder), so
that a test of the reader is not a test of the reader against itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_DTYPE = {np.dtype(np.float32): 1, np.dtype(np.int64): 9, np.dtype(np.int32): 3}


def crc32c_slow(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def entry_proto(dtype: int, shape, offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(_bytes_field(2, _field(1, 0, _varint(d))) for d in shape)  # TensorShapeProto.dim
    msg = _field(1, 0, _varint(dtype)) + _bytes_field(2, dims)
    if offset:  # proto3: zero scalars are not written (shard_id is always 0 here)
        msg += _field(4, 0, _varint(offset))
    msg += _field(5, 0, _varint(size)) + _field(6, 5, struct.pack("<I", crc))
    return msg


def _block(entries: list[tuple[bytes, bytes]], restart_every: int = 2) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(last), len(key)) and last[shared] == key[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        last = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", _mask(crc32c_slow(block + b"\x00")))


def write_table(path: Path, items: dict[bytes, bytes], per_block: int = 3) -> None:
    keys = sorted(items)
    table, index = bytearray(), []
    for start in range(0, len(keys), per_block):
        chunk = [(k, items[k]) for k in keys[start : start + per_block]]
        block = _block(chunk)
        index.append((chunk[-1][0], _varint(len(table)) + _varint(len(block))))
        table += _with_trailer(block)
    meta_handle = _varint(len(table)) + _varint(len(_block([])))
    table += _with_trailer(_block([]))
    index_block = _block(index, restart_every=1)
    index_handle = _varint(len(table)) + _varint(len(index_block))
    table += _with_trailer(index_block)
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    path.write_bytes(bytes(table + footer))


def write_tf_checkpoint(prefix: Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write ``tensors`` as the TF checkpoint ``prefix`` (.index + .data-00000-of-00001); returns the prefix."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data, items = bytearray(), {}
    header = _field(1, 0, _varint(1)) + _bytes_field(3, _field(1, 0, _varint(1)))  # num_shards 1, version{producer 1}
    items[b""] = header
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])  # (not ascontiguousarray: it turns a 0-d step counter into shape (1,))
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        items[name.encode()] = entry_proto(_DTYPE[arr.dtype], arr.shape, len(data), len(raw), _mask(crc32c_slow(raw)))
        data += raw
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))
    write_table(prefix.with_name(prefix.name + ".index"), items)
    return prefix


def bert_tf_variables(hf_state: dict, with_optimizer: bool = True) -> dict[str, np.ndarray]:
    """An HF BertForPreTraining state dict -> the TF variable names and layouts google-research/bert's
    ``modeling.py`` / ``run_pretraining.py`` save (kernels (in, out); LayerNorm gamma/beta), plus the
    step counter and Adam slots a pre-training checkpoint carries."""
    import re

    out = {}
    for key, t in hf_state.items():
        a = t.detach().numpy().astype(np.float32)
        name = key.replace(".", "/")
        name = re.sub(r"layer/(\d+)", r"layer_\1", name)
        name = re.sub(r"LayerNorm/weight$", "LayerNorm/gamma", name)
        name = re.sub(r"LayerNorm/bias$", "LayerNorm/beta", name)
        name = re.sub(r"_embeddings/weight$", "_embeddings", name)
        if name == "cls/predictions/bias":
            name = "cls/predictions/output_bias"
        elif name.startswith("cls/seq_relationship/"):
            name = name.replace("/weight", "/output_weights").replace("/bias", "/output_bias")
        elif name.endswith("/weight"):  # a dense layer: TF keeps (in, out)
            name, a = name[: -len("weight")] + "kernel", np.ascontiguousarray(a.T)
        if key.endswith("position_ids") or key.endswith("decoder.weight") or key.endswith("decoder.bias"):
            continue  # buffers, and the MLM decoder tied to the word embeddings
        out[name] = a
    if with_optimizer:
        out["global_step"] = np.array(6072, dtype=np.int64)
        first = "bert/embeddings/LayerNorm/gamma"
        out[first + "/adam_m"] = np.zeros_like(out[first])
        out[first + "/adam_v"] = np.zeros_like(out[first])
    return out

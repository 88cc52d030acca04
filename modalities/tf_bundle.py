"""Read a TensorFlow checkpoint (tensor bundle V2) without TensorFlow.

A TF 1.x ``tf.train.Saver`` checkpoint ``PREFIX`` is two kinds of file:
    PREFIX.index                      a LevelDB-style sorted table (SSTable): key = variable name,
                                      value = a serialised ``BundleEntryProto`` (dtype, shape, shard_id,
                                      offset, size, masked crc32c); the empty key holds the
                                      ``BundleHeaderProto`` (num_shards, endianness, version)
    PREFIX.data-00000-of-00001        the tensors' raw little-endian bytes, at [offset, offset + size)

Formats read from upstream: ``tensorflow/core/protobuf/tensor_bundle.proto`` (the two messages),
``tensorflow/core/util/tensor_bundle/tensor_bundle.cc`` (index tables are written uncompressed; each
entry's crc32c is ``crc32c::Mask``-ed), the LevelDB table format as TF's ``lib/io/format.cc`` /
``block.cc`` write it (48-byte footer: two varint block handles, zero padding, magic
0xdb4775248b80fb57; blocks of prefix-compressed entries + restart array, each followed by a
1-byte compression type and a masked crc32c), and ``tensorflow/core/framework/types.proto`` (the
DataType numbers). No code was copied.

    bundle = TFBundle("cubert/model.ckpt-6072")      # or the .index path, or a folder with one
    bundle.entries["bert/embeddings/word_embeddings"].shape
    tensors = bundle.read()                          # {name: torch.Tensor}, every crc32c checked
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # 2 block handles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER = 5  # 1-byte compression type + 4-byte masked crc32c
# tensorflow/core/framework/types.proto DataType -> numpy dtype (the ones a model checkpoint holds)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 14: "bfloat16", 19: np.float16}
DT_STRING = 7


# --- crc32c (Castagnoli, reflected polynomial 0x82F63B78), as TF's crc32c::Value / Mask -----------
def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _crc_table()
_TABLE_LIST = [int(x) for x in _TABLE]


def _crc_bytes(register: int, data: bytes) -> int:
    t = _TABLE_LIST
    for b in data:
        register = t[(register ^ b) & 0xFF] ^ (register >> 8)
    return register


def _shift_operator(nbytes: int) -> list[int]:
    """The linear map 'feed ``nbytes`` zero bytes' on the 32-bit register, as the images of its 32 bits."""
    return [_crc_bytes(1 << b, bytes(nbytes)) for b in range(32)]


def _apply(op: list[int], regs: np.ndarray) -> np.ndarray:
    out = np.zeros_like(regs)
    for b, col in enumerate(op):
        out ^= ((regs >> np.uint32(b)) & np.uint32(1)) * np.uint32(col)
    return out


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data``. Long inputs run as 2**k interleaved chunks in numpy (one table step per
    byte column), whose registers are then folded pairwise with the 'shift by L zero bytes' operator:
    CRC is linear over GF(2), so this equals the byte-by-byte definition (a test checks both)."""
    data = memoryview(data).cast("B")
    n = len(data)
    chunks = 1 << max(0, min(16, (n // 256).bit_length() - 1))
    if chunks < 64:
        return _crc_bytes(0xFFFFFFFF, bytes(data)) ^ 0xFFFFFFFF
    length = n // chunks
    cols = np.frombuffer(data[: chunks * length], dtype=np.uint8).reshape(chunks, length).T.copy()  # (L, C)
    regs = np.zeros(chunks, dtype=np.uint32)
    regs[0] = 0xFFFFFFFF  # the initial value enters through the first chunk only
    for j in range(length):
        regs = _TABLE[(regs ^ cols[j]) & 0xFF] ^ (regs >> np.uint32(8))
    op = _shift_operator(length)
    while len(regs) > 1:  # fold neighbours: crc(a + b) = shift_len(b)(crc(a)) ^ crc(b)
        regs = _apply(op, regs[0::2]) ^ regs[1::2]
        op = [int(_apply(op, np.array([c], dtype=np.uint32))[0]) for c in op]  # op := op . op
    return _crc_bytes(int(regs[0]), bytes(data[chunks * length:])) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB / TF ``crc32c::Mask``: rotate right by 15 and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format, the few fields these messages use ------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a serialised message; value: int or bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos : pos + size]), pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


@dataclass(frozen=True)
class BundleEntry:
    """One ``BundleEntryProto``: where a tensor's bytes are and what they are."""

    dtype: int  # tensorflow DataType number
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked
    sliced: bool  # a partitioned variable (its slices are separate entries)

    @classmethod
    def parse(cls, buf: bytes) -> BundleEntry:
        f = {"dtype": 0, "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0}
        shape: list[int] = []
        sliced = False
        names = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}
        for number, _, value in _fields(buf):
            if number in names:
                f[names[number]] = value
            elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1; string name = 2}
                for n2, _, dim in _fields(value):
                    if n2 == 2:
                        shape.append(next((v for n3, _, v in _fields(dim) if n3 == 1), 0))
            elif number == 7:
                sliced = True
        return cls(shape=tuple(shape), sliced=sliced, **f)


# --- the SSTable -------------------------------------------------------------------------------
def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int], where: Path) -> bytes:
    offset, size = handle
    if offset + size + BLOCK_TRAILER > len(table):
        raise ValueError(f"{where}: a block reaches past the end of the file; the index is truncated")
    block = table[offset : offset + size]
    kind = table[offset + size]
    (stored,) = struct.unpack_from("<I", table, offset + size + 1)
    if mask_crc(crc32c(table[offset : offset + size + 1])) != stored:
        raise ValueError(f"{where}: a table block fails its crc32c; the index file is corrupt: download it again")
    if kind != 0:
        raise ValueError(f"{where}: a table block is compressed (type {kind}); TF writes bundle indexes "
                         "uncompressed, and only those are read here")
    return block


def _block_entries(block: bytes):
    """(key, value) of one block: entries share a prefix with the previous key (restarts ignored)."""
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + vlen]
        pos += vlen


def read_table(path: Path) -> dict[bytes, bytes]:
    """Every (key, value) of a LevelDB-format table file."""
    table = path.read_bytes()
    if len(table) < FOOTER_SIZE:
        raise ValueError(f"{path} is {len(table)} bytes, shorter than a table footer; it is not a TF checkpoint index")
    footer = table[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise ValueError(f"{path} does not end in the table magic number; it is not a TF checkpoint .index file")
    _, pos = _block_handle(footer, 0)  # the metaindex block: empty in TF bundles
    index_handle, _ = _block_handle(footer, pos)
    out: dict[bytes, bytes] = {}
    for _, handle_bytes in _block_entries(_read_block(table, index_handle, path)):
        handle, _ = _block_handle(handle_bytes, 0)
        out.update(_block_entries(_read_block(table, handle, path)))
    return out


def _step(index: Path) -> int:
    m = re.fullmatch(r".*-(\d+)\.index", index.name)
    return int(m.group(1)) if m else -1


def find_index(path: str | Path) -> Path:
    """A checkpoint prefix, its .index file, or a folder -> the .index file. In a folder: the one its
    ``checkpoint`` file names (``model_checkpoint_path: "model.ckpt-6072"``), else the highest step."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file() and (m := re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M)):
            named = path / (Path(m.group(1)).name + ".index")
            if named.is_file():
                return named
        found = sorted(path.glob("*.index"), key=lambda p: (_step(p), p.name))
        if not found:
            raise FileNotFoundError(f"{path} holds no TF checkpoint (PREFIX.index + PREFIX.data-*-of-*)")
        return found[-1]
    if path.suffix == ".index" and path.is_file():
        return path
    if (index := path.with_name(path.name + ".index")).is_file():
        return index
    raise FileNotFoundError(f"{path} is not a TF checkpoint: neither {path.name}.index nor a folder with one exists")


class TFBundle:
    """The entries of a TF checkpoint and a reader of their tensors (float/int types; strings skipped)."""

    def __init__(self, path: str | Path):
        self.index = find_index(path)
        self.prefix = self.index.with_suffix("")
        raw = read_table(self.index)
        header = raw.pop(b"", None)
        if header is None:
            raise ValueError(f"{self.index} has no bundle header (the empty key); it is not a TF V2 checkpoint index")
        fields = {n: v for n, _, v in _fields(header)}
        self.num_shards = int(fields.get(1, 1))
        if fields.get(2, 0) != 0:
            raise ValueError(f"{self.index} was written on a big-endian machine; only little-endian bundles are read")
        self.entries = {k.decode("utf-8"): BundleEntry.parse(v) for k, v in raw.items()}

    def data_file(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, names=None, verify: bool = True) -> dict[str, torch.Tensor]:
        """{name: tensor} for ``names`` (default: every non-string, unpartitioned entry). ``verify``
        checks each tensor's crc32c, so a truncated or flipped download is refused by name."""
        if names is None:
            wanted = [n for n, e in self.entries.items() if e.dtype != DT_STRING and not e.sliced]
        else:
            wanted = list(names)
            for n in wanted:
                if n not in self.entries:
                    raise KeyError(f"{self.index} has no tensor {n!r}")
                if self.entries[n].sliced:
                    raise ValueError(f"{self.index}: {n} is a partitioned variable; those are not read here")
        out: dict[str, torch.Tensor] = {}
        by_shard: dict[int, list[str]] = {}
        for n in wanted:
            by_shard.setdefault(self.entries[n].shard_id, []).append(n)
        for shard, shard_names in sorted(by_shard.items()):
            path = self.data_file(shard)
            if not path.is_file():
                raise FileNotFoundError(f"{self.index} names data file {path.name}, which is not beside it")
            with path.open("rb") as f:
                for n in shard_names:
                    out[n] = self._read_one(f, path, n, verify)
        return out

    def _read_one(self, f, path: Path, name: str, verify: bool) -> torch.Tensor:
        e = self.entries[name]
        if e.dtype not in DTYPES:
            raise ValueError(f"{self.index}: {name} has TF DataType {e.dtype}, which is not read here")
        f.seek(e.offset)
        buf = f.read(e.size)
        if len(buf) != e.size:
            raise ValueError(f"{path} ends before {name}'s bytes; the data file is truncated: download it again")
        if verify and mask_crc(crc32c(buf)) != e.crc32c:
            raise ValueError(f"{path}: {name} fails its crc32c; the data file is corrupt: download it again")
        if DTYPES[e.dtype] == "bfloat16":
            t = torch.frombuffer(bytearray(buf), dtype=torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(buf, dtype=np.dtype(DTYPES[e.dtype]).newbyteorder("<")).copy())
        count = int(np.prod(e.shape)) if e.shape else 1
        if t.numel() != count:
            raise ValueError(f"{self.index}: {name} has {t.numel()} values for shape {list(e.shape)}; the entry is corrupt")
        return t.reshape(e.shape)


def read_tf_checkpoint(path: str | Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of a TF checkpoint (prefix, .index file, or a folder holding one)."""
    return TFBundle(path).read(verify=verify)

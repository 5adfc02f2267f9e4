"""Read TensorFlow (v1/v2 "tensor bundle") checkpoints without TensorFlow.

A checkpoint `<prefix>.index` + `<prefix>.data-00000-of-00001` is:
  .index  a LevelDB-format SSTable (sorted key -> value table): data blocks of prefix-compressed entries, an
          index block pointing at them, and a 48-byte footer (two block handles + magic). Keys are variable
          names; values are serialized `BundleEntryProto`s (dtype, shape, shard, offset, size, crc32c). The
          empty key holds the `BundleHeaderProto`.
  .data   the raw little-endian tensor bytes, concatenated; an entry's (offset, size) locate its tensor.
Only the pieces needed for float/int weights are parsed; protobuf is decoded by hand (varints + wire types).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57          # LevelDB table magic number, little-endian uint64 at the file end
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
           10: np.bool_, 14: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}  # tensorflow DataType enum


# ---- varints and protobuf ----

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; return (value, new position)."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a serialized protobuf message; varints as int, others as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, val))
    return out


def _parse_entry(buf: bytes) -> dict:
    """BundleEntryProto -> {dtype, shape, shard_id, offset, size}; shape from TensorShapeProto.dim.size."""
    e = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "sliced": False}
    for f, v in _proto_fields(buf):
        if f == 1:
            e["dtype"] = v
        elif f == 2:
            for g, dim in _proto_fields(v):
                if g == 2:  # TensorShapeProto.Dim
                    e["shape"].append(next((s for h, s in _proto_fields(dim) if h == 1), 0))
        elif f in (3, 4, 5):
            e[{3: "shard_id", 4: "offset", 5: "size"}[f]] = v
        elif f == 7:
            e["sliced"] = True
    return e


# ---- SSTable ----

def _block(data: bytes, handle: tuple[int, int]) -> bytes:
    """The contents of one table block (a 5-byte trailer follows it: compression type + crc)."""
    off, size = handle
    if data[off + size] != 0:
        raise ValueError("compressed SSTable blocks are not supported (TensorFlow writes uncompressed indexes)")
    return data[off:off + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of a block; keys share a prefix with the previous key (shared, unshared, value length)."""
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (n_restarts + 1)
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


def _handle(buf: bytes, pos: int = 0) -> tuple[tuple[int, int], int]:
    """A BlockHandle: (offset, size) as two varints."""
    off, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (off, size), pos


def read_index(index_path: str | Path) -> dict[str, dict]:
    """Every entry of a checkpoint .index: variable name -> parsed BundleEntryProto."""
    data = Path(index_path).read_bytes()
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise ValueError(f"{index_path} is not a TensorFlow checkpoint index (bad SSTable magic)")
    footer = data[-48:]
    _, pos = _handle(footer)                     # metaindex handle (unused)
    index_handle, _ = _handle(footer, pos)
    entries = {}
    for _, handle_bytes in _block_entries(_block(data, index_handle)):
        for key, value in _block_entries(_block(data, _handle(handle_bytes)[0])):
            if key:                              # "" is the BundleHeaderProto
                entries[key.decode()] = _parse_entry(value)
    return entries


# ---- tensors ----

def load_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint `prefix` (files `prefix.index`, `prefix.data-00000-of-00001`) as numpy arrays."""
    prefix = str(prefix)
    index = Path(prefix + ".index")
    if not index.is_file():
        raise FileNotFoundError(f"no TensorFlow checkpoint index at {index}")
    entries = read_index(index)
    shards: dict[int, bytes] = {}
    n_shards = 1 + max((e["shard_id"] for e in entries.values()), default=0)
    out = {}
    for name, e in entries.items():
        if e["sliced"]:
            raise ValueError(f"{name}: partitioned (sliced) variables are not supported")
        if e["dtype"] not in _DTYPES:
            continue                             # strings / resources: not weights
        if e["shard_id"] not in shards:
            f = Path(f"{prefix}.data-{e['shard_id']:05d}-of-{n_shards:05d}")
            if not f.is_file():
                raise FileNotFoundError(f"checkpoint data shard missing: {f}")
            shards[e["shard_id"]] = f.read_bytes()
        raw = shards[e["shard_id"]][e["offset"]:e["offset"] + e["size"]]
        arr = np.frombuffer(raw, dtype=np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(e["shape"]).copy()
    return out

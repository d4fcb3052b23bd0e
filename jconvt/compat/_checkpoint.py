"""Reads TensorFlow checkpoints (tensor bundles) without TensorFlow.

A TF checkpoint ``prefix`` is ``prefix.index``, an SSTable (LevelDB table
format) mapping each tensor name to a ``BundleEntryProto`` (dtype, shape,
shard, offset, size, masked CRC32C), with a ``BundleHeaderProto`` under the
empty key, and ``prefix.data-NNNNN-of-MMMMM`` shards holding the raw bytes.
Both ``tf.compat.v1.train.Saver`` and ``tf.train.Checkpoint`` write it.
Every block and tensor checksum is verified.
"""

import os
import pathlib
import re
import struct

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto
_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
    8: np.complex64, 18: np.complex128,
}
_DT_STRING, _DT_BFLOAT16 = 7, 14


class CheckpointError(ValueError):
  """A checkpoint file is corrupt or uses a feature this reader lacks."""


# ------------------------------------------------------------- CRC32C ---

def _crc_table():
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc_table()


def _crc32c_python(data: bytes, crc: int = 0) -> int:
  crc ^= 0xFFFFFFFF
  table = _TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


try:  # Optional accelerated implementations, when installed.
  import google_crc32c as _google_crc32c  # type: ignore[import-not-found]

  def crc32c(data: bytes) -> int:
    return int.from_bytes(_google_crc32c.Checksum(data).digest(), "big")
except ImportError:  # pragma: no cover - depends on the environment
  try:
    import crc32c as _crc32c_mod  # type: ignore[import-not-found]

    def crc32c(data: bytes) -> int:
      return _crc32c_mod.crc32c(data)
  except ImportError:
    def crc32c(data: bytes) -> int:
      """CRC32C (Castagnoli), in pure Python (``pip install google-crc32c``
      makes large checkpoints load faster)."""
      return _crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------ decoding ---

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= len(buf):
      raise CheckpointError("truncated varint")
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7


def _proto_fields(buf: bytes):
  """Yields ``(field_number, wire_type, value)`` of a serialized message."""
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
    elif wire == 2:
      n, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + n], pos + n
    elif wire == 5:
      value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
    else:
      raise CheckpointError(f"unsupported protobuf wire type {wire}")
    yield field, wire, value


def _signed64(v: int) -> int:
  return v - (1 << 64) if v >= 1 << 63 else v


def _parse_shape(buf: bytes) -> tuple[int, ...] | None:
  dims = []
  for field, _, value in _proto_fields(buf):
    if field == 2:
      size = 0
      for f, _, v in _proto_fields(value):
        if f == 1:
          size = _signed64(v)
      dims.append(size)
    elif field == 3 and value:
      return None
  return tuple(dims)


def _parse_entry(buf: bytes) -> dict:
  entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None,
           "slices": False}
  for field, _, value in _proto_fields(buf):
    if field == 1:
      entry["dtype"] = value
    elif field == 2:
      entry["shape"] = _parse_shape(value)
    elif field == 3:
      entry["shard_id"] = value
    elif field == 4:
      entry["offset"] = value
    elif field == 5:
      entry["size"] = value
    elif field == 6:
      entry["crc32c"] = value
    elif field == 7:
      entry["slices"] = True
  return entry


def _parse_header(buf: bytes) -> dict:
  header = {"num_shards": 1, "endianness": 0}
  for field, _, value in _proto_fields(buf):
    if field == 1:
      header["num_shards"] = value
    elif field == 2:
      header["endianness"] = value
  return header


def _read_block(data: bytes, offset: int, size: int, path) -> bytes:
  """A table block's contents, checking its trailer (type + masked CRC)."""
  if offset + size + 5 > len(data):
    raise CheckpointError(f"{path}: block at {offset} (+{size}) runs past the end of the file")
  contents = data[offset:offset + size]
  kind = data[offset + size]
  stored = struct.unpack_from("<I", data, offset + size + 1)[0]
  if masked_crc32c(contents + bytes([kind])) != stored:
    raise CheckpointError(f"{path}: checksum mismatch in the block at offset {offset}")
  if kind != 0:
    raise CheckpointError(
        f"{path}: block at offset {offset} is compressed (type {kind}); only uncompressed "
        f"tensor-bundle indexes (what TF writes) are supported")
  return contents


def _block_entries(block: bytes):
  """Yields ``(key, value)`` of an SSTable block (prefix-compressed keys)."""
  if len(block) < 4:
    raise CheckpointError("truncated table block")
  num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
  end = len(block) - 4 * (num_restarts + 1)
  pos, key = 0, b""
  while pos < end:
    shared, pos = _varint(block, pos)
    unshared, pos = _varint(block, pos)
    value_len, pos = _varint(block, pos)
    key = key[:shared] + block[pos:pos + unshared]
    pos += unshared
    yield key, block[pos:pos + value_len]
    pos += value_len


def _read_index(path: pathlib.Path) -> dict[str, bytes]:
  data = path.read_bytes()
  if len(data) < _FOOTER:
    raise CheckpointError(f"{path}: too short ({len(data)} bytes) to be a checkpoint index")
  footer = data[-_FOOTER:]
  if struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
    raise CheckpointError(f"{path}: not a TF checkpoint index (bad table magic number)")
  _, pos = _varint(footer, 0)  # metaindex handle, unused
  _, pos = _varint(footer, pos)
  index_offset, pos = _varint(footer, pos)
  index_size, pos = _varint(footer, pos)
  entries = {}
  for _, handle in _block_entries(_read_block(data, index_offset, index_size, path)):
    offset, p = _varint(handle, 0)
    size, _ = _varint(handle, p)
    for key, value in _block_entries(_read_block(data, offset, size, path)):
      entries[key.decode("utf-8")] = value
  return entries


def _decode_strings(raw: bytes, count: int, name: str, expected_crc: int | None) -> np.ndarray:
  """TF's string tensor layout: varint64 lengths, the masked CRC32C of the
  lengths, then the bytes. The CRCs take each length as a little-endian
  uint32 (uint64 past 2**32 - 1), not as its varint bytes; the entry's CRC
  covers those lengths, the length checksum and the bytes."""
  pos, lengths = 0, []
  for _ in range(count):
    n, pos = _varint(raw, pos)
    lengths.append(n)
  fixed_lengths = b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths)
  (length_crc,) = struct.unpack_from("<I", raw, pos)
  if masked_crc32c(fixed_lengths) != length_crc:
    raise CheckpointError(f"checksum mismatch in the string lengths of tensor {name!r}")
  body = raw[pos + 4:]
  if expected_crc is not None and masked_crc32c(
      fixed_lengths + raw[pos:pos + 4] + body) != expected_crc:
    raise CheckpointError(f"checksum mismatch for tensor {name!r}")
  out, pos = [], 0
  for n in lengths:
    out.append(body[pos:pos + n])
    pos += n
  return np.array(out, dtype=object)


def _resolve_prefix(prefix) -> pathlib.Path:
  prefix = pathlib.Path(os.fspath(prefix))
  if prefix.is_dir():
    state = prefix / "checkpoint"
    if not state.exists():
      raise FileNotFoundError(
          f"{prefix} is a directory without a 'checkpoint' state file; pass the checkpoint "
          f"prefix (the path without .index) instead")
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(), re.M)
    if not match:
      raise CheckpointError(f"{state}: no model_checkpoint_path")
    latest = pathlib.Path(match.group(1))
    prefix = latest if latest.is_absolute() else prefix / latest
  return prefix


def load_tf_checkpoint(prefix) -> dict[str, np.ndarray]:
  """Reads every tensor of a TF checkpoint, without TensorFlow.

  Args:
    prefix: the checkpoint prefix (``.../model.ckpt``, ``.../ckpt-1``: the
      path without ``.index``), or a directory holding a ``checkpoint``
      state file (its latest checkpoint is read).

  Returns:
    ``{name: array}``. Names are TF's: ``dec/kernel`` for ``Saver``
    checkpoints, ``dec/kernel/.ATTRIBUTES/VARIABLE_VALUE`` for object-based
    ones. bfloat16 tensors come back as ``ml_dtypes.bfloat16`` arrays, strings
    as object arrays of bytes.

  Raises:
    FileNotFoundError: the index or a data shard is missing.
    CheckpointError (a ValueError): a corrupt file (bad magic number, block or
      tensor checksum mismatch, truncation) or an unsupported feature
      (partitioned variables, compressed blocks).
  """
  prefix = _resolve_prefix(prefix)
  index_path = pathlib.Path(f"{prefix}.index")
  if not index_path.exists():
    raise FileNotFoundError(f"TF checkpoint index not found: {index_path}")
  entries = _read_index(index_path)
  header = _parse_header(entries.pop("", b""))
  num_shards = header["num_shards"]
  byteorder = ">" if header["endianness"] == 1 else "<"
  shards: dict[int, bytes] = {}
  out = {}
  for name, value in sorted(entries.items()):
    entry = _parse_entry(value)
    if entry["slices"]:
      raise CheckpointError(
          f"{index_path}: tensor {name!r} is a partitioned (sliced) variable, which this "
          f"reader does not support")
    shard_id = entry["shard_id"]
    if shard_id not in shards:
      shard_path = pathlib.Path(f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}")
      if not shard_path.exists():
        raise FileNotFoundError(f"TF checkpoint data shard not found: {shard_path}")
      shards[shard_id] = shard_path.read_bytes()
    data = shards[shard_id]
    start, size = entry["offset"], entry["size"]
    if start + size > len(data):
      raise CheckpointError(
          f"{name!r} lies past the end of data shard {shard_id} (file truncated?)")
    raw = data[start:start + size]
    shape = entry["shape"] or ()
    dtype = entry["dtype"]
    if dtype == _DT_STRING:
      out[name] = _decode_strings(raw, int(np.prod(shape)), name, entry["crc32c"]).reshape(shape)
      continue
    if entry["crc32c"] is not None and masked_crc32c(raw) != entry["crc32c"]:
      raise CheckpointError(f"checksum mismatch for tensor {name!r} in data shard {shard_id}")
    if dtype == _DT_BFLOAT16:
      import ml_dtypes  # noqa: PLC0415  (a dependency of jax)
      np_dtype = np.dtype(ml_dtypes.bfloat16)
    elif dtype in _DTYPES:
      np_dtype = np.dtype(_DTYPES[dtype]).newbyteorder(byteorder)
    else:
      raise CheckpointError(f"tensor {name!r} has TF dtype {dtype}, which is not supported")
    array = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    out[name] = array.astype(array.dtype.newbyteorder("=")).copy()
  return out

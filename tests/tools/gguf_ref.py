"""gguf_ref.py — an independent GGUF v3 reader and writer in plain Python (numpy for tensor
data), written from the format's specification (ggml's docs/gguf.md), so the C loader
(loader/gguf_read.c, loader/gguf_write.c) can be checked against a second implementation that
shares no code with it: tests/test_gguf_py.py writes files here and reads them with
`nexusctl model inspect --json`, and reads what nx_gguf_save wrote.

Layout: b"GGUF", u32 version, u64 tensor count, u64 key/value count, the key/values (string key,
u32 value type, value), the tensor infos (string name, u32 n_dims, u64 ne[n_dims], u32 ggml
type, u64 offset relative to the data section), zero padding to general.alignment (32 unless
the key says otherwise), the data section. Strings are u64 length + bytes. Little-endian.
ne[0] is the innermost dimension: numpy's (row-major) shape is ne reversed.
"""
import struct

import numpy as np

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# value types, as the spec numbers them
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
TYPE_NAMES = {U8: "u8", I8: "i8", U16: "u16", I16: "i16", U32: "u32", I32: "i32", F32: "f32",
              BOOL: "bool", STR: "str", ARR: "arr", U64: "u64", I64: "i64", F64: "f64"}
TYPE_BY_NAME = {v: k for k, v in TYPE_NAMES.items()}
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
NUMPY = {U8: "<u1", I8: "<i1", U16: "<u2", I16: "<i2", U32: "<u4", I32: "<i4", F32: "<f4",
         BOOL: "<u1", U64: "<u8", I64: "<i8", F64: "<f8"}

# ggml tensor types this module knows: name -> (ggml id, elements per block, bytes per block)
GGML_TYPES = {
    "F32": (0, 1, 4), "F16": (1, 1, 2), "BF16": (30, 1, 2), "I8": (24, 1, 1), "I16": (25, 1, 2),
    "I32": (26, 1, 4), "I64": (27, 1, 8), "F64": (28, 1, 8),
    "Q4_0": (2, 32, 18), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210),
}
GGML_NAMES = {v[0]: k for k, v in GGML_TYPES.items()}


class GGUFError(ValueError):
    pass


def tensor_bytes(type_name, shape):
    """Bytes of a tensor of numpy shape `shape` (the last dimension a multiple of the block)."""
    _, elems, block = GGML_TYPES[type_name]
    if not shape or shape[-1] % elems:
        raise GGUFError(f"{type_name}: last dimension {shape} is not whole blocks of {elems}")
    return int(np.prod(shape, dtype=np.uint64)) // elems * block


# ---- reading ----------------------------------------------------------------------------

class _Cursor:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise GGUFError(f"truncated at offset {self.pos} (needs {n} bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return bytes(self.take(self.unpack("<Q")))


def _read_scalar(cur, vtype):
    if vtype == STR:
        return cur.string()
    if vtype not in _SCALAR:
        raise GGUFError(f"unknown value type {vtype}")
    value = cur.unpack(_SCALAR[vtype])
    if vtype == BOOL:
        if value > 1:
            raise GGUFError(f"bool value {value}")
        return bool(value)
    return value


class Reader:
    """A parsed GGUF file: version, kvs (list of dicts in file order: key, type, elem_type,
    value — bytes for strings, a list for arrays), alignment, tensors (dicts: name, ne, shape,
    type_name, ggml_type, offset, bytes), data_offset, and data(tensor) -> its bytes."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.raw = f.read()
        cur = _Cursor(memoryview(self.raw))
        if bytes(cur.take(4)) != MAGIC:
            raise GGUFError("bad magic")
        self.version = cur.unpack("<I")
        if self.version not in (2, 3):
            raise GGUFError(f"version {self.version}")
        tensor_count = cur.unpack("<Q")
        kv_count = cur.unpack("<Q")
        self.kvs = []
        for _ in range(kv_count):
            key = cur.string().decode()
            vtype = cur.unpack("<I")
            entry = {"key": key, "type": vtype, "elem_type": vtype}
            if vtype == ARR:
                etype = cur.unpack("<I")
                count = cur.unpack("<Q")
                entry["elem_type"] = etype
                if etype == STR:
                    entry["value"] = [cur.string() for _ in range(count)]
                elif etype in NUMPY:
                    size = np.dtype(NUMPY[etype]).itemsize
                    arr = np.frombuffer(cur.take(size * count), dtype=NUMPY[etype])
                    entry["value"] = [bool(x) for x in arr] if etype == BOOL else arr.tolist()
                else:
                    raise GGUFError(f"array element type {etype}")
            else:
                entry["value"] = _read_scalar(cur, vtype)
            self.kvs.append(entry)
        self.kv = {e["key"]: e for e in self.kvs}
        if len(self.kv) != len(self.kvs):
            raise GGUFError("duplicate key")
        align = self.kv.get("general.alignment")
        self.alignment = align["value"] if align else DEFAULT_ALIGNMENT
        self.tensors = []
        for _ in range(tensor_count):
            name = cur.string().decode()
            ndim = cur.unpack("<I")
            ne = [cur.unpack("<Q") for _ in range(ndim)]
            ggml_type = cur.unpack("<I")
            offset = cur.unpack("<Q")
            type_name = GGML_NAMES.get(ggml_type)
            if type_name is None:
                raise GGUFError(f"tensor {name}: ggml type {ggml_type} unknown here")
            shape = list(reversed(ne))
            self.tensors.append({"name": name, "ne": ne, "shape": shape, "type_name": type_name,
                                 "ggml_type": ggml_type, "offset": offset,
                                 "bytes": tensor_bytes(type_name, shape)})
        self.header_end = cur.pos
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        for t in self.tensors:
            if t["offset"] % self.alignment or \
                    self.data_offset + t["offset"] + t["bytes"] > len(self.raw):
                raise GGUFError(f"tensor {t['name']}: bad offset {t['offset']}")

    def value(self, key):
        return self.kv[key]["value"]

    def data(self, tensor):
        start = self.data_offset + tensor["offset"]
        return self.raw[start:start + tensor["bytes"]]


# ---- writing ----------------------------------------------------------------------------

def _pack_string(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("<Q", len(s)) + s


def _pack_scalar(vtype, value):
    if vtype == STR:
        return _pack_string(value)
    if vtype == BOOL:
        return struct.pack("<B", 1 if value else 0)
    return struct.pack(_SCALAR[vtype], value)


def pack_kv(key, vtype, value, elem_type=None):
    out = _pack_string(key) + struct.pack("<I", vtype)
    if vtype != ARR:
        return out + _pack_scalar(vtype, value)
    out += struct.pack("<IQ", elem_type, len(value))
    if elem_type == STR:
        return out + b"".join(_pack_string(s) for s in value)
    if elem_type == BOOL:
        return out + bytes(1 if v else 0 for v in value)
    return out + np.asarray(value, dtype=NUMPY[elem_type]).tobytes()


def write(path, kvs, tensors, alignment=DEFAULT_ALIGNMENT, info_order=None, gap=0, version=3):
    """Write a GGUF file. kvs: list of (key, type, value) or (key, ARR, values, elem_type);
    general.alignment is added when alignment is not the default. tensors: list of
    (name, type_name, numpy shape, raw bytes), laid out in the data section in list order,
    each at the next multiple of the alignment plus `gap` alignments of padding; info_order
    (indices) changes the order of the tensor infos only. Returns the data section's offset and
    each tensor's offset in it."""
    kv_blobs = [pack_kv(*kv) for kv in kvs]
    if alignment != DEFAULT_ALIGNMENT:
        kv_blobs.insert(0, pack_kv("general.alignment", U32, alignment))
    offsets, at = [], 0
    for name, type_name, shape, raw in tensors:
        if len(raw) != tensor_bytes(type_name, shape):
            raise GGUFError(f"{name}: {len(raw)} bytes for {type_name} {shape}")
        at = -(-at // alignment) * alignment
        offsets.append(at)
        at += len(raw) + gap * alignment
    infos = []
    for i in info_order if info_order is not None else range(len(tensors)):
        name, type_name, shape, _ = tensors[i]
        ne = list(reversed(shape))
        infos.append(_pack_string(name) + struct.pack("<I", len(ne)) +
                     b"".join(struct.pack("<Q", n) for n in ne) +
                     struct.pack("<IQ", GGML_TYPES[type_name][0], offsets[i]))
    head = MAGIC + struct.pack("<IQQ", version, len(tensors), len(kv_blobs))
    head += b"".join(kv_blobs) + b"".join(infos)
    head += b"\0" * (-len(head) % alignment)
    with open(path, "wb") as f:
        f.write(head)
        for (_, _, _, raw), off in zip(tensors, offsets):
            f.write(b"\0" * (len(head) + off - f.tell()))
            f.write(raw)
        f.write(b"\0" * (-(f.tell() - len(head)) % alignment))
    return len(head), offsets


# ---- Q8_0 as ggml's reference quantizer makes it ------------------------------------------

Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])


def quantize_q8_0(x):
    """Blocks of 32: d = max|x| / 127 (stored as fp16), q = roundf(x / d) computed as x * (1/d)
    in float32, rounding half away from zero, as ggml's quantize_row_q8_0_ref."""
    blocks = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    amax = np.max(np.abs(blocks), axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = (blocks * inv[:, None]).astype(np.float32).astype(np.float64)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)
    out = np.empty(len(blocks), dtype=Q8_0_BLOCK)
    out["d"] = d.astype(np.float16)
    out["qs"] = q.astype(np.int8)
    return out.tobytes()


def dequantize_q8_0(raw):
    blocks = np.frombuffer(raw, dtype=Q8_0_BLOCK)
    return (blocks["d"].astype(np.float32)[:, None] * blocks["qs"].astype(np.float32)).ravel()


def bf16_bytes(x):
    """float32 -> bfloat16 bits, round to nearest even (finite inputs)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).tobytes()

"""Minimal safetensors reader and writer for the Python reference (no `safetensors` package).

File format: an 8-byte little-endian header length N, N bytes of JSON (tensor name -> {dtype,
shape, data_offsets [begin, end) relative to the end of the header}, plus an optional
"__metadata__" object of strings), then the raw little-endian tensor bytes.

Supported dtypes and how they come back from `read_file` (all as torch tensors):
  F32 -> float32, BF16 -> float32 holding the exact bf16 values, F8_E4M3 -> uint8 codes
  (decode with fp8.e4m3_to_float), I32 -> int32, I64 -> int64.
A sharded checkpoint lists its files in model.safetensors.index.json ("weight_map": name -> file).
"""

import json
import os
import struct

import numpy as np
import torch

_NUMPY_DTYPES = {
    "F32": np.dtype("<f4"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}


def _decode(dtype, shape, raw):
    if dtype not in _NUMPY_DTYPES:
        raise ValueError(f"unsupported safetensors dtype {dtype}")
    array = np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype]).reshape(shape)
    if dtype == "BF16":
        # A bf16 value is the upper half of the float32 with the same bits.
        widened = (array.astype(np.uint32) << 16).view(np.float32)
        return torch.from_numpy(widened.copy())
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


def read_file(path):
    """Returns (tensors: dict name -> torch.Tensor, dtypes: dict name -> str, metadata: dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        raise ValueError(f"{path}: header length {header_len} past the end of the file")
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors, dtypes = {}, {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        shape = list(info["shape"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * _NUMPY_DTYPES[info["dtype"]].itemsize or end > len(data):
            raise ValueError(f"{path}: tensor {name} has bad data_offsets {begin}..{end}")
        tensors[name] = _decode(info["dtype"], shape, data[begin:end])
        dtypes[name] = info["dtype"]
    return tensors, dtypes, metadata


def checkpoint_files(folder):
    """The .safetensors files of a checkpoint folder, in sorted filename order."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            names = set(json.load(f)["weight_map"].values())
    else:
        names = {n for n in os.listdir(folder) if n.endswith(".safetensors")}
    if not names:
        raise ValueError(f"{folder}: no .safetensors files")
    return [os.path.join(folder, n) for n in sorted(names)]


def read_checkpoint(folder):
    """All tensors of a (possibly sharded) checkpoint: (tensors, dtypes)."""
    tensors, dtypes = {}, {}
    for path in checkpoint_files(folder):
        t, d, _ = read_file(path)
        duplicate = tensors.keys() & t.keys()
        if duplicate:
            raise ValueError(f"{path}: tensor {sorted(duplicate)[0]} is also in another shard")
        tensors.update(t)
        dtypes.update(d)
    return tensors, dtypes


def _encode(dtype, tensor):
    t = tensor.detach().cpu().contiguous()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "BF16":
        # Round to nearest even through torch's own float32 -> bfloat16 conversion.
        bits = t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy()
        return bits.astype("<i2").tobytes()
    if dtype == "F8_E4M3":
        if t.dtype != torch.uint8:
            raise ValueError("F8_E4M3 tensors are written from uint8 codes")
        return t.numpy().tobytes()
    if dtype == "I32":
        return t.to(torch.int32).numpy().astype("<i4").tobytes()
    if dtype == "I64":
        return t.to(torch.int64).numpy().astype("<i8").tobytes()
    raise ValueError(f"unsupported safetensors dtype {dtype}")


def write_file(path, tensors, metadata=None):
    """Writes `tensors`: dict name -> (dtype string, torch.Tensor), in name order.

    The header is padded with spaces to a multiple of 8 bytes, as the safetensors library does.
    """
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name in sorted(tensors):
        dtype, tensor = tensors[name]
        raw = _encode(dtype, tensor)
        header[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)

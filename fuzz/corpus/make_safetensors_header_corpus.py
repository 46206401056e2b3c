#!/usr/bin/env python3
"""Writes the seed corpus of safetensors_header_fuzz: small valid files and corrupt ones.

Run: python3 fuzz/corpus/make_safetensors_header_corpus.py. Each seed is a whole safetensors file (8-byte
little-endian header length, JSON header, data section).
"""
import json
import pathlib
import struct


def safetensors(header, data=b"", declared_length=None, pad=True):
    text = header if isinstance(header, (bytes, str)) else json.dumps(header, separators=(",", ":"))
    raw = text.encode() if isinstance(text, str) else text
    if pad:
        raw += b" " * ((8 - len(raw) % 8) % 8)
    length = len(raw) if declared_length is None else declared_length
    return struct.pack("<Q", length) + raw + data


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


SEEDS = {
    "valid_empty": safetensors({}),
    "valid_one_f32": safetensors({"w": tensor("F32", [2], 0, 8)}, bytes(range(8))),
    "valid_every_dtype": safetensors(
        {
            "__metadata__": {"format": "pt"},
            "a": tensor("I64", [1], 0, 8),
            "b": tensor("F32", [2, 1], 8, 16),
            "c": tensor("I32", [], 16, 20),
            "d": tensor("F16", [1], 20, 22),
            "e": tensor("BF16", [0, 3], 22, 22),
            "f": tensor("F8_E4M3", [2], 22, 24),
        },
        bytes(24),
    ),
    "short_file": b"\x10\x00\x00",
    "length_past_end": safetensors("{}", declared_length=4096),
    "length_huge": safetensors("{}", declared_length=(100 << 20) + 1),
    "invalid_json": safetensors('{"w": {"dtype": '),
    "not_object": safetensors("[1,2,3]"),
    "unknown_dtype": safetensors({"x": tensor("F64", [1], 0, 8)}, bytes(8)),
    "negative_dim": safetensors('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', bytes(4)),
    "shape_overflow": safetensors({"w": tensor("F32", [1 << 32, 1 << 32], 0, 0)}),
    "span_mismatch": safetensors({"w": tensor("BF16", [3], 0, 4)}, bytes(4)),
    "overlap": safetensors({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}, bytes(12)),
    "gap": safetensors({"a": tensor("F32", [1], 0, 4), "b": tensor("F32", [1], 8, 12)}, bytes(12)),
    "trailing_data": safetensors({"a": tensor("F32", [1], 0, 4)}, bytes(12)),
    "duplicate_name": safetensors(
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        bytes(8),
    ),
    "metadata_not_strings": safetensors({"__metadata__": {"epoch": 3}}),
    "nested_deep": safetensors("[" * 4000 + "]" * 4000),
    # Hostile headers of issue 15: a shape nested past the JSON depth limit and one within it, names
    # holding control bytes (escaped, so valid JSON) or a raw 0xFF, many zero-size tensors, a
    # repeated key inside a tensor entry, and a number beyond a double.
    "shape_deep": safetensors('{"w":{"dtype":"F32","shape":' + "[" * 20000 + "]" * 20000
                              + ',"data_offsets":[0,0]}}'),
    "shape_nested_legal": safetensors('{"w":{"dtype":"F32","shape":' + "[" * 200 + "1" + "]" * 200
                                      + ',"data_offsets":[0,4]}}', bytes(4)),
    "name_control_bytes": safetensors({"\x1b[2J\x07n": tensor("Q4", [1], 0, 0)}),
    "name_raw_ff": safetensors(b'{"bad\xff":{}}'),
    "wide_zero_size": safetensors({f"t{i}": tensor("F32", [0], 0, 0) for i in range(1000)}),
    "duplicate_nested_key": safetensors(
        '{"w":{"dtype":"F32","dtype":"F32","shape":[0],"data_offsets":[0,0]}}'),
    "number_overflow": safetensors('{"w":{"dtype":"F32","shape":[1e400],"data_offsets":[0,0]}}'),
}

OUT = pathlib.Path(__file__).resolve().parent / "safetensors_header_fuzz"
OUT.mkdir(exist_ok=True)
for name, data in SEEDS.items():
    (OUT / name).write_bytes(data)

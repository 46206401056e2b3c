#!/usr/bin/python3
"""Writes tests/data/model_goldens/<case>.safetensors from the Python reference.

Each case builds its checkpoint with `dsa init-model` (deterministic for a seed), runs
dsv32_reference.py over a fixed 40-token sequence (prefill in chunks, then one-token decodes) and
stores the logits and named intermediates. See README.md in this folder for the file contract.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import torch

import dsv32_reference as ref
from safetensors_io import checkpoint_files, write_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN_COUNT = 40
TOKEN_SEED = 1117  # torch.Generator seed of the token sequence, shared by every case

# name: (preset, checkpoint seed, dtype, attention, prefill N, chunk C, all intermediates)
CASES = {
    "tiny_fp8_sparse_chunked": ("tiny", 7, "fp8", "sparse", 24, 10, True),
    "tiny_fp8_sparse_whole": ("tiny", 7, "fp8", "sparse", 24, 24, False),
    "tiny_bf16_sparse_chunked": ("tiny", 7, "bf16", "sparse", 24, 10, True),
    "tiny_fp8_dense": ("tiny", 7, "fp8", "dense", 24, 24, False),
    "tiny_v3_fp8": ("tiny-v3", 7, "fp8", "dense", 24, 10, False),
}


def checkpoint_sha256(folder):
    """sha256 over the bytes of the checkpoint's .safetensors files in sorted filename order."""
    digest = hashlib.sha256()
    for path in checkpoint_files(folder):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def golden_tokens(vocab):
    generator = torch.Generator().manual_seed(TOKEN_SEED)
    return torch.randint(0, vocab, (TOKEN_COUNT,), generator=generator, dtype=torch.int64)


def build_checkpoint(dsa, preset, seed, dtype, folder):
    subprocess.run([
        dsa, "init-model", "--preset", preset, "--seed",
        str(seed), "--dtype", dtype, "-o", folder, "--force"
    ],
                   check=True,
                   stdout=subprocess.DEVNULL)


def golden_tensors(results, tokens, everything):
    """The tensors of one golden file: name -> (safetensors dtype, tensor)."""
    out = {"tokens": ("I32", tokens.to(torch.int32))}
    for name, value in results.items():
        keep = everything or name in ("logits", "norm") or name.endswith("indexer.topk")
        if keep:
            dtype = "I32" if value.dtype == torch.int32 else "F32"
            out[name] = (dtype, value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsa", default=os.path.join(REPO, "build", "release", "dsa"))
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "data", "model_goldens"))
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dsa_goldens_") as work:
        for case in args.cases:
            preset, seed, dtype, attention, prefill, chunk, everything = CASES[case]
            folder = os.path.join(work, f"{preset}_{dtype}_{seed}")
            if not os.path.exists(folder):
                build_checkpoint(args.dsa, preset, seed, dtype, folder)
            model = ref.Model(folder, attention)
            tokens = golden_tokens(model.cfg.vocab)
            results = ref.run_schedule(model, tokens, prefill, chunk)
            metadata = {
                "preset": preset,
                "seed": seed,
                "dtype": dtype,
                "attention": attention,
                "prefill": prefill,
                "chunk": chunk,
                "checkpoint_sha256": checkpoint_sha256(folder),
            }
            path = os.path.join(args.out, f"{case}.safetensors")
            write_file(path, golden_tensors(results, tokens, everything), metadata)
            print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

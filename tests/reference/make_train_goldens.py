#!/usr/bin/python3
"""Writes tests/data/train_goldens/<case>.safetensors from the training reference.

Builds the micro checkpoint with `dsa init-model --config micro_config.json --dtype bf16
--seed 7`, then evaluates train_reference.py (float64, torch autograd) on fixed tokens: loss
gradients of the lm, indexer and balance losses, and 10 AdamW steps. See README.md in this folder
("Training goldens") for the file contract.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch

import train_reference as tr
from make_goldens import checkpoint_sha256
from safetensors_io import write_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDENS = os.path.join(REPO, "tests", "data", "train_goldens")
CONFIG = os.path.join(GOLDENS, "micro_config.json")
CHECKPOINT_SEED = 7
TOKEN_COUNT = 24
TOKEN_SEED = 2024  # torch.Generator seed; the AdamW batch's second sequence is the next draw

ADAMW = {
    "attention": "dense",
    "lr": 3e-3,
    "min_lr": 3e-4,
    "warmup": 2,
    "steps": 10,
    "weight_decay": 0.1,
    "clip": 1.0,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "router_bias_rate": 1e-3,
    "balance_alpha": 0.0,
}
ADAMW_FINAL = [
    "model.norm.weight",
    "model.layers.0.self_attn.q_a_proj.weight",
    "model.layers.1.mlp.gate.weight",
    "model.layers.1.mlp.gate.e_score_correction_bias",
]
BALANCE_ALPHA = 1.0
INDEXER_PARAMS = ("wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias",
                  "weights_proj.weight")

CASES = ("micro_dense_lm", "micro_sparse_lm", "micro_indexer", "micro_sparse_indexer",
         "micro_adamw", "micro_balance")


def golden_batch(vocab, count):
    generator = torch.Generator().manual_seed(TOKEN_SEED)
    return [
        torch.randint(0, vocab, (TOKEN_COUNT,), generator=generator, dtype=torch.int64)
        for _ in range(count)
    ]


def build_checkpoint(dsa, folder):
    subprocess.run([
        dsa, "init-model", "--config", CONFIG, "--dtype", "bf16", "--seed",
        str(CHECKPOINT_SEED), "-o", folder, "--force"
    ],
                   check=True,
                   stdout=subprocess.DEVNULL)


def scalar(value):
    """A loss as F32 [1] (safetensors_io has no F64) and its float64 repr for the metadata."""
    return ("F32", torch.tensor([float(value)], dtype=torch.float64)), repr(float(value))


def token_text(batch):
    return " ".join(str(int(t)) for tokens in batch for t in tokens)


def margins(records):
    """Metadata on how robust the discrete choices are (an fp32 engine agrees when these are
    well above fp32 rounding): the smallest non-zero gap at each selecting row's top-k
    boundary, how many boundaries are exact ties (resolved to the lower position), the smallest
    |qI . kI| (a ReLU decision) over causal pairs and heads, and the smallest gap between the
    kept and the best dropped expert group."""
    out = {}
    gaps, ties, dots, routes = [], 0, [], []
    for rec in records:
        if rec.index_scores is not None and rec.index_scores.shape[0] > rec.topk.shape[1]:
            row_gaps = tr.topk_margins(rec.index_scores, rec.topk.shape[1])
            gaps += [g for g in row_gaps if g > 0]
            ties += sum(1 for g in row_gaps if g == 0)
        if rec.route_margin is not None:
            routes.append(float(rec.route_margin.min()))
        if rec.index_dots is not None:
            dots.append(float(rec.index_dots.abs().min()))
    if gaps:
        out["topk_min_gap"] = repr(min(gaps))
        out["topk_boundary_ties"] = str(ties)
    if dots:
        out["indexer_min_abs_dot"] = repr(min(dots))
    if routes:
        out["route_min_margin"] = repr(min(routes))
    return out


def run_forward(cfg, params, buffers, tokens, attention):
    leaves = tr.trainable(params)
    logits, records = tr.forward(cfg, leaves, buffers, tokens, attention)
    return leaves, logits, records


def lm_case(cfg, params, buffers, tokens, attention):
    leaves, logits, records = run_forward(cfg, params, buffers, tokens, attention)
    losses = tr.token_losses(logits, tokens)
    loss = losses.mean()
    grads = tr.gradients(loss, leaves)
    tensors = {"token_losses": ("F32", losses.detach())}
    tensors["loss"], text = scalar(loss)
    tensors.update({f"grad.{n}": ("F32", g) for n, g in grads.items()})
    if attention == "sparse":
        tensors.update(topk_tensors(records))
    return tensors, {"loss": text, "loss_kind": "lm", **margins(records)}


def topk_tensors(records):
    return {
        f"layers.{layer}.indexer.topk": ("I32", rec.topk)
        for layer, rec in enumerate(records)
        if rec.topk is not None
    }


def indexer_case(cfg, params, buffers, tokens, attention, stage):
    leaves, _, records = run_forward(cfg, params, buffers, tokens, attention)
    loss = tr.indexer_loss(records, stage)
    names = [n for n in sorted(leaves) if ".self_attn.indexer." in n and n.endswith(INDEXER_PARAMS)]
    grads = tr.gradients(loss, leaves, names)
    tensors = {f"grad.{n}": ("F32", g) for n, g in grads.items()}
    tensors["loss"], text = scalar(loss)
    for layer, rec in enumerate(records):
        if rec.index_scores is not None:
            tensors[f"layers.{layer}.indexer.row_kl"] = ("F32", tr.indexer_row_kl(rec, stage))
    if attention == "sparse":
        tensors.update(topk_tensors(records))
    return tensors, {"loss": text, "loss_kind": f"indexer_{stage}", **margins(records)}


def balance_case(cfg, params, buffers, tokens):
    leaves, logits, records = run_forward(cfg, params, buffers, tokens, "dense")
    lm = tr.token_losses(logits, tokens).mean()
    balance = tr.balance_loss(cfg, records, BALANCE_ALPHA)
    loss = lm + balance
    grads = tr.gradients(loss, leaves)
    tensors = {f"grad.{n}": ("F32", g) for n, g in grads.items()}
    tensors["loss"], text = scalar(loss)
    tensors["lm_loss"], lm_text = scalar(lm)
    tensors["balance_loss"], balance_text = scalar(balance)
    meta = {
        "loss": text,
        "lm_loss": lm_text,
        "balance_loss": balance_text,
        "loss_kind": "lm+balance",
        "balance_alpha": repr(BALANCE_ALPHA),
        **margins(records)
    }
    return tensors, meta


def adamw_case(cfg, params, buffers, batch):
    final, final_buffers, history = tr.train(cfg, params, buffers, batch, ADAMW)
    steps = ADAMW["steps"]
    tensors = {
        "tokens": ("I32", torch.stack(batch).to(torch.int32)),
        "losses": ("F32", torch.tensor(history["loss"], dtype=torch.float64)),
        "grad_norms": ("F32", torch.tensor(history["grad_norm"], dtype=torch.float64)),
        "lrs": ("F32", torch.tensor(history["lr"], dtype=torch.float64)),
    }
    everything = {**final, **final_buffers}
    for name in ADAMW_FINAL:
        tensors[f"final.{name}"] = ("F32", everything[name])
    for name in sorted(history["counts"][0]):
        layer = tr.layer_of(name)
        counts = torch.stack([c[name] for c in history["counts"]]).to(torch.int32)
        tensors[f"layers.{layer}.expert_counts"] = ("I32", counts)
    meta = {k: (v if isinstance(v, str) else repr(v)) for k, v in ADAMW.items()}
    meta.update({
        "batch": str(len(batch)),
        "loss_kind": "lm",
        "losses": " ".join(repr(x) for x in history["loss"]),
        "grad_norms": " ".join(repr(x) for x in history["grad_norm"]),
        "lrs": " ".join(repr(x) for x in history["lr"]),
        "route_min_margin": repr(min(history["route_margin"])),
        "final": " ".join(ADAMW_FINAL),
    })
    assert len(history["loss"]) == steps
    return tensors, meta


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsa", default=os.path.join(REPO, "build", "release", "dsa"))
    parser.add_argument("--out", default=GOLDENS)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one summation order: reproducible bit for bit
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dsa_train_goldens_") as work:
        folder = os.path.join(work, "micro")
        build_checkpoint(args.dsa, folder)
        cfg = tr.load_config(folder)
        params, buffers = tr.load_parameters(folder, cfg)
        batch = golden_batch(cfg.vocab, 2)
        tokens = batch[0]
        common = {
            "config": "micro_config.json",
            "seed": str(CHECKPOINT_SEED),
            "dtype": "bf16",
            "checkpoint_sha256": checkpoint_sha256(folder),
        }
        for case in args.cases:
            if case == "micro_adamw":
                tensors, meta = adamw_case(cfg, params, buffers, batch)
                meta["tokens"] = token_text(batch)
            else:
                if case == "micro_dense_lm":
                    tensors, meta = lm_case(cfg, params, buffers, tokens, "dense")
                    meta["attention"] = "dense"
                elif case == "micro_sparse_lm":
                    tensors, meta = lm_case(cfg, params, buffers, tokens, "sparse")
                    meta["attention"] = "sparse"
                elif case == "micro_indexer":
                    tensors, meta = indexer_case(cfg, params, buffers, tokens, "dense", "warmup")
                    meta["attention"] = "dense"
                elif case == "micro_sparse_indexer":
                    tensors, meta = indexer_case(cfg, params, buffers, tokens, "sparse", "sparse")
                    meta["attention"] = "sparse"
                else:
                    tensors, meta = balance_case(cfg, params, buffers, tokens)
                    meta["attention"] = "dense"
                tensors["tokens"] = ("I32", tokens.to(torch.int32))
                meta["tokens"] = token_text([tokens])
            path = os.path.join(args.out, f"{case}.safetensors")
            write_file(path, tensors, {**common, **meta})
            print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

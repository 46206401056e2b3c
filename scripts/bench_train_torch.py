#!/usr/bin/python3
"""PyTorch eager baseline for `dsa bench train`: fp32 training steps of the same model.

Loads a Hugging Face model folder (as `dsa bench train --torch` writes it: config.json and F32
safetensors), trains it with torch autograd in float32 on the given token batch, and prints one
JSON object with the wall time of every step. Each timed step is what one `dsa` optimizer step
does (docs/training-engine.md): the forward pass, the loss, backward, global-norm clipping,
AdamW (torch.optim.AdamW, weight decay on 2-D weights only), and the router-bias update.

The model is tests/reference/train_reference.py, the engine's independent PyTorch reference,
run batched: its building blocks (RMSNorm, LayerNorm, RoPE, the SwiGLU MLP, the MoE with
DeepSeek's routing, the indexer's top-k rule) are called on [B, T, ...] tensors or on the B*T
tokens flattened, and only MLA attention and the indexer scores are written here for a batch
(the reference's take one sequence). `--check` runs the batched model against the reference's
own per-sequence `batch_loss` in float64 and exits; the two agree to rounding.

Stages, as `dsa train --stage`:
  dense   LM loss, dense causal attention; the indexer does not run
  sparse  top-k attention chosen by the indexer; LM loss + the indexer KL over the chosen keys
          (the indexer's inputs detached)

Threads: torch.set_num_threads(--threads); OpenBLAS's threads come from OPENBLAS_NUM_THREADS
(`dsa bench train --torch` sets it to the same count). Run with Debian's /usr/bin/python3
(python3-torch, python3-numpy), like the reference.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))

import torch  # noqa: E402

import train_reference as ref  # noqa: E402


def rope_batched(fn, x, cos, sin):
    """The reference's RoPE (its tables broadcast over the first dim, T) on x [B, T, ...]."""
    return fn(x.transpose(0, 1), cos, sin).transpose(0, 1)


def mla_attention(cfg, p, prefix, x, cq, cos, sin, allowed, scale):
    """ref.mla_attention for x [B, T, D]; allowed [B or 1, T, T]. Returns (out, probs [B,H,T,T])."""
    b, t, h, nope, rope, v_dim = x.shape[0], x.shape[1], cfg.heads, cfg.nope, cfg.rope, cfg.v_dim
    if cq is not None:
        q = cq @ p[prefix + "q_b_proj.weight"].T
    else:
        q = x @ p[prefix + "q_proj.weight"].T
    q = q.reshape(b, t, h, nope + rope)
    q = torch.cat([q[..., :nope], rope_batched(ref.rope_interleaved, q[..., nope:], cos, sin)], -1)
    kv = x @ p[prefix + "kv_a_proj_with_mqa.weight"].T
    c = ref.rms_norm(kv[..., :cfg.kv_lora], p[prefix + "kv_a_layernorm.weight"], cfg.eps)
    k_pe = rope_batched(ref.rope_interleaved, kv[..., cfg.kv_lora:], cos, sin)
    kvb = (c @ p[prefix + "kv_b_proj.weight"].T).reshape(b, t, h, nope + v_dim)
    k = torch.cat([kvb[..., :nope], k_pe.unsqueeze(2).expand(b, t, h, rope)], dim=-1)
    v = kvb[..., nope:]
    scores = scale * torch.einsum("bthd,bshd->bhts", q, k)
    scores = scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhts,bshd->bthd", probs, v)
    out = o.reshape(b, t, h * v_dim) @ p[prefix + "o_proj.weight"].T
    return out, probs


def indexer_scores(cfg, p, prefix, x, cq, cos, sin):
    """ref._indexer's I [B, T, T] (-inf above the diagonal) for x [B, T, D], cq [B, T, q_lora]."""
    b, t, hi, di, rope = x.shape[0], x.shape[1], cfg.index_heads, cfg.index_dim, cfg.rope
    q = (cq @ p[prefix + "wq_b.weight"].T).reshape(b, t, hi, di)
    q = torch.cat([rope_batched(ref.rope_halves, q[..., :rope], cos, sin), q[..., rope:]], -1)
    k = ref.layer_norm(x @ p[prefix + "wk.weight"].T, p[prefix + "k_norm.weight"],
                       p[prefix + "k_norm.bias"])
    k = torch.cat([rope_batched(ref.rope_halves, k[..., :rope], cos, sin), k[..., rope:]], -1)
    w = (x @ p[prefix + "weights_proj.weight"].T) * (hi**-0.5 * di**-0.5)
    dots = torch.einsum("bthd,bsd->bths", q, k)
    scores = torch.einsum("bth,bths->bts", w, torch.relu(dots))
    return scores.masked_fill(~ref.causal_mask(t), float("-inf"))


def select_top_keys(scores, topk):
    """bool [B, T, T]: the min(topk, t+1) best keys s <= t of each row (ref.select_top_keys's
    rule, batched: a stable sort puts equal scores in position order)."""
    b, t, _ = scores.shape
    k = min(topk, t)
    order = torch.sort(-scores.detach(), dim=-1, stable=True).indices[..., :k]
    selected = torch.zeros(b, t, t, dtype=torch.bool)
    selected.scatter_(2, order, True)
    return selected & ref.causal_mask(t)  # rows t < k picked -inf (masked) keys too


def indexer_kl(scores, probs, keys):
    """ref.indexer_row_kl for a batch: KL(p || softmax(I)) over `keys` [B, T, T], p the mean of
    the attention probs [B, H, T, T] over heads (a constant). Returns [B, T]."""
    p = probs.detach().mean(dim=1)
    log_q = torch.log_softmax(scores.masked_fill(~keys, float("-inf")), dim=-1)
    live = keys & (p > 0)
    log_p = torch.log(torch.where(live, p, torch.ones_like(p)))
    terms = p * (log_p - log_q.masked_fill(~keys, 0.0))
    return torch.where(live, terms, torch.zeros_like(terms)).sum(dim=-1)


def forward_loss(cfg, p, buffers, tokens, stage):
    """The step's loss for tokens [B, T] (int64): the LM mean over the B*(T-1) predicted
    positions, plus in the sparse stage the mean indexer KL over all rows of all layers.
    Returns (loss, lm_loss, {router bias name: [E] tokens routed to each expert})."""
    b, t = tokens.shape
    cos, sin = ref.rope_tables(cfg, t, p["model.embed_tokens.weight"].dtype)
    causal = ref.causal_mask(t).unsqueeze(0)
    scale = cfg.softmax_scale()
    h = p["model.embed_tokens.weight"][tokens]
    counts, kl_rows = {}, []
    for layer in range(cfg.layers):
        lp = f"model.layers.{layer}."
        a = lp + "self_attn."
        x = ref.rms_norm(h, p[lp + "input_layernorm.weight"], cfg.eps)
        cq = ref.query_latent(cfg, p, a, x)
        allowed, scores = causal, None
        if stage == "sparse":
            scores = indexer_scores(cfg, p, a + "indexer.", x.detach(), cq.detach(), cos, sin)
            allowed = select_top_keys(scores, cfg.index_topk)
        out, probs = mla_attention(cfg, p, a, x, cq, cos, sin, allowed, scale)
        if scores is not None:
            kl_rows.append(indexer_kl(scores, probs, allowed))
        h = h + out
        x = ref.rms_norm(h, p[lp + "post_attention_layernorm.weight"], cfg.eps)
        if layer >= cfg.first_dense:
            y, _, routed, _ = ref.moe(cfg, p, lp + "mlp.", x.reshape(b * t, -1),
                                      buffers.get(lp + ref.ROUTER_BIAS))
            y = y.reshape(b, t, -1)
            counts[lp + ref.ROUTER_BIAS] = routed.sum(dim=0).to(torch.float64)
        else:
            y = ref.mlp(p, lp + "mlp.", x)
        h = h + y
    logits = ref.rms_norm(h, p["model.norm.weight"], cfg.eps) @ p["lm_head.weight"].T
    lm = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                           tokens[:, 1:].reshape(-1))
    loss = lm
    if kl_rows:
        loss = loss + torch.cat([r.reshape(-1) for r in kl_rows]).mean()
    return loss, lm, counts


def load_model(folder, dtype):
    cfg = ref.load_config(folder)
    params, buffers = ref.load_parameters(folder, cfg)
    params = {n: t.to(dtype).requires_grad_(True) for n, t in params.items()}
    buffers = {n: t.to(dtype) for n, t in buffers.items()}
    return cfg, params, buffers


def check(args):
    """The batched model against ref.batch_loss, float64, on the first sequences of the batch."""
    cfg, params, buffers = load_model(args.model, torch.float64)
    tokens = read_tokens(args.tokens, args.batch, args.seq)
    with torch.no_grad():
        _, lm, _ = forward_loss(cfg, params, buffers, tokens, "dense")
        want, _, _ = ref.batch_loss(cfg, params, buffers, [row.tolist() for row in tokens])
    diff = abs(float(lm) - float(want)) / abs(float(want))
    print(json.dumps({"batched_loss": float(lm), "reference_loss": float(want),
                      "relative_difference": diff}))
    return 0 if diff < 1e-10 else 1


def read_tokens(path, batch, seq):
    with open(path) as f:
        rows = json.load(f)["tokens"]
    tokens = torch.tensor(rows, dtype=torch.int64)
    if tuple(tokens.shape) != (batch, seq):
        raise SystemExit(f"{path}: tokens are {list(tokens.shape)}, expected [{batch}, {seq}]")
    return tokens


def bench(args):
    torch.set_num_threads(args.threads)
    cfg, params, buffers = load_model(args.model, torch.float32)
    tokens = read_tokens(args.tokens, args.batch, args.seq)
    if args.stage == "sparse" and not cfg.has_indexer:
        raise SystemExit("--stage sparse needs a model with the lightning indexer")
    # Every parameter is updated, as `dsa train` does in both stages: tensors the loss does not
    # reach (the indexers in the dense stage) get zero gradients and still take weight decay.
    names = sorted(params)
    trained = [params[n] for n in names]
    groups = [
        {"params": [params[n] for n in names if ref.decays(n, params[n])],
         "weight_decay": args.weight_decay},
        {"params": [params[n] for n in names if not ref.decays(n, params[n])],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)

    def step():
        opt.zero_grad(set_to_none=True)
        # --precision bf16: PyTorch's own mixed precision on the CPU (matrix products in bf16,
        # fp32 master weights), the counterpart of `dsa train --precision bf16`.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, lm, counts = forward_loss(cfg, params, buffers, tokens, args.stage)
        loss.backward()
        for t in trained:
            if t.grad is None:
                t.grad = torch.zeros_like(t)
        torch.nn.utils.clip_grad_norm_(trained, args.clip)
        opt.step()
        with torch.no_grad():
            ref.update_router_biases(buffers, counts, args.bias_update_rate)
        return float(lm)

    losses, seconds = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = step()
        elapsed = time.perf_counter() - start
        losses.append(loss)
        if i >= args.warmup:
            seconds.append(elapsed)
    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "stage": args.stage,
        "precision": args.precision,
        "batch": args.batch,
        "seq": args.seq,
        "warmup": args.warmup,
        "step_seconds": seconds,
        "losses": losses,
    }))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (config.json + safetensors)")
    parser.add_argument("--tokens", required=True, help='JSON file {"tokens": [[...], ...]}')
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--stage", choices=("dense", "sparse"), default="dense")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: the forward under torch.autocast(cpu, bfloat16)")
    parser.add_argument("--lr", type=float, default=3e-4, help="constant learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--bias-update-rate", type=float, default=1e-3)
    parser.add_argument("--check", action="store_true",
                        help="compare the batched model with the reference's batch_loss, exit")
    args = parser.parse_args()
    return check(args) if args.check else bench(args)


if __name__ == "__main__":
    sys.exit(main())

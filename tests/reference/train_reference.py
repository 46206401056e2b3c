"""An independent float64 reference of the training semantics of docs/training-engine.md.

Written from that document alone (it is the contract): the forward pass in plain math (no FP8
activations, no bf16 rounding), the lm / indexer / balance losses, the router-bias update and
AdamW with the warm-up + cosine schedule and global-norm clipping. Gradients come from torch
autograd in float64. The engine computes the same in fp32, so it should agree with this to fp32
accuracy wherever the discrete choices (indexer top-k, MoE routing) agree; the goldens record the
margins of those choices (see make_train_goldens.py).

Reused from the inference reference: the config.json reader (Config), the fp32 YaRN frequencies
(rope_frequencies; the angle t * freq[i] and its cos/sin are then taken in float64) and the FP8
weight dequantisation. Everything else is written fresh here.

Where the contract leaves a choice, this file takes the one stated in its docstrings.

Everything computes in the dtype of the parameters: float64 for the goldens; train_self_test
also runs it on float32 copies to measure how far an fp32 computation lands from them.
"""

import json
import math
import os

import torch

import dsv32_reference as inference
import fp8
from safetensors_io import read_checkpoint

F64 = torch.float64
LAYER_NORM_EPS = 1e-6  # the indexer's k_norm (the contract fixes it, independent of rms_norm_eps)
CLIP_EPS = 1e-6  # clipping scales by clip / (norm + CLIP_EPS)
ROUTER_BIAS = "mlp.gate.e_score_correction_bias"

# --- parameters ------------------------------------------------------------------------------


def load_config(folder, overrides=None):
    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)
    raw.update(overrides or {})
    return inference.Config(raw)


def layer_of(name):
    """The layer index of a `model.layers.<L>.` name, else None."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "model" and parts[1] == "layers":
        return int(parts[2])
    return None


def load_parameters(folder, cfg):
    """(params, buffers): float64 tensors by Hugging Face name.

    params: the trainable tensors, every main-model tensor except the router bias (BF16: exact
    value; FP8: code x its 128x128 block scale, rounded to bf16). MTP layers (index >= layers)
    and the `_scale_inv` tensors are not parameters. buffers: the router biases (F32).
    """
    tensors, dtypes = read_checkpoint(folder)
    params, buffers = {}, {}
    for name, value in tensors.items():
        layer = layer_of(name)
        if name.endswith("_scale_inv") or (layer is not None and layer >= cfg.layers):
            continue
        if name.endswith(ROUTER_BIAS):
            buffers[name] = value.to(F64)
        elif dtypes[name] == "F8_E4M3":
            scale = tensors[name + "_scale_inv"]
            params[name] = inference.bf16(fp8.dequant_weight(fp8.e4m3_to_float(value), scale))
        else:
            params[name] = value.to(F64)
    return params, buffers


def decays(name, tensor):
    """Weight decay applies to 2-D weights only (not norms, biases or the router bias)."""
    return tensor.dim() == 2


# --- building blocks -------------------------------------------------------------------------


def rms_norm(x, weight, eps):
    return weight * (x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps))


def layer_norm(x, weight, bias, eps=LAYER_NORM_EPS):
    centered = x - x.mean(dim=-1, keepdim=True)
    var = (centered * centered).mean(dim=-1, keepdim=True)  # biased variance
    return weight * (centered / torch.sqrt(var + eps)) + bias


def rope_tables(cfg, length, dtype=F64):
    """cos, sin [length, rope/2] of the angle t * freq[i], t = 0 .. length-1.

    freq are the inference engine's fp32 YaRN frequencies (exact fp32 values); the product and
    cos/sin are float64 (the engine's fp32 table differs from these by fp32 rounding only).
    """
    freqs = inference.rope_frequencies(cfg).to(dtype)
    angle = torch.arange(length, dtype=dtype).unsqueeze(1) * freqs.unsqueeze(0)
    return angle.cos(), angle.sin()


def _broadcast(table, x):
    """cos/sin [T, R/2] shaped to multiply x [T, ..., R/2]."""
    return table.reshape((table.shape[0],) + (1,) * (x.dim() - 2) + (table.shape[1],))


def rope_interleaved(x, cos, sin):
    """MLA layout: pairs (2i, 2i+1) of the last dim, rows at positions 0 .. T-1."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = _broadcast(cos, a), _broadcast(sin, a)
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)


def rope_halves(x, cos, sin):
    """Indexer layout: pairs (i, i + R/2) of the last dim."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = _broadcast(cos, a), _broadcast(sin, a)
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1)


def mlp(params, prefix, x):
    """(SiLU(x gate_proj^T) * (x up_proj^T)) down_proj^T."""
    a = x @ params[prefix + "gate_proj.weight"].T
    b = x @ params[prefix + "up_proj.weight"].T
    return (torch.nn.functional.silu(a) * b) @ params[prefix + "down_proj.weight"].T


def causal_mask(length):
    """bool [T, T]: key s visible from row t iff s <= t."""
    return torch.ones(length, length, dtype=torch.bool).tril()


# --- attention -------------------------------------------------------------------------------


def query_latent(cfg, params, prefix, x):
    """cq = RMSNorm(x q_a_proj^T; q_a_layernorm) [T, q_lora], or None without q_lora."""
    if not cfg.q_lora:
        return None
    return rms_norm(x @ params[prefix + "q_a_proj.weight"].T,
                    params[prefix + "q_a_layernorm.weight"], cfg.eps)


def mla_attention(cfg, params, prefix, x, cq, cos, sin, allowed, scale):
    """MLA in MHA form over the keys `allowed` [T, T] of each row.

    Returns (out [T, D], probs [T, H, T] (0 outside allowed)).
    """
    t_count, h, nope, rope, v_dim = x.shape[0], cfg.heads, cfg.nope, cfg.rope, cfg.v_dim
    if cq is not None:
        q = cq @ params[prefix + "q_b_proj.weight"].T
    else:
        q = x @ params[prefix + "q_proj.weight"].T
    q = q.reshape(t_count, h, nope + rope)
    q = torch.cat([q[..., :nope], rope_interleaved(q[..., nope:], cos, sin)], dim=-1)
    kv = x @ params[prefix + "kv_a_proj_with_mqa.weight"].T
    c = rms_norm(kv[:, :cfg.kv_lora], params[prefix + "kv_a_layernorm.weight"], cfg.eps)
    k_pe = rope_interleaved(kv[:, cfg.kv_lora:], cos, sin)
    kvb = (c @ params[prefix + "kv_b_proj.weight"].T).reshape(t_count, h, nope + v_dim)
    k = torch.cat([kvb[..., :nope], k_pe.unsqueeze(1).expand(t_count, h, rope)], dim=-1)
    v = kvb[..., nope:]
    scores = scale * torch.einsum("thd,shd->ths", q, k)
    scores = scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("ths,shd->thd", probs, v)
    out = o.reshape(t_count, h * v_dim) @ params[prefix + "o_proj.weight"].T
    return out, probs


def indexer_scores(cfg, params, prefix, x, cq, cos, sin):
    """Lightning indexer scores I [T, T] (-inf for keys s > t) from x [T, D] and cq [T, q_lora].

    The callers pass detached x and cq: only the indexer's own parameters get gradients.
    """
    return _indexer(cfg, params, prefix, x, cq, cos, sin)[0]


def _indexer(cfg, params, prefix, x, cq, cos, sin):
    """(I [T, T], the per-head dot products qI . kI [T, Hi, T])."""
    t_count, hi, di, rope = x.shape[0], cfg.index_heads, cfg.index_dim, cfg.rope
    q = (cq @ params[prefix + "wq_b.weight"].T).reshape(t_count, hi, di)
    q = torch.cat([rope_halves(q[..., :rope], cos, sin), q[..., rope:]], dim=-1)
    k = layer_norm(x @ params[prefix + "wk.weight"].T, params[prefix + "k_norm.weight"],
                   params[prefix + "k_norm.bias"])
    k = torch.cat([rope_halves(k[:, :rope], cos, sin), k[:, rope:]], dim=-1)
    w = (x @ params[prefix + "weights_proj.weight"].T) * (hi**-0.5 * di**-0.5)  # [T, Hi]
    dots = torch.einsum("thd,sd->ths", q, k)
    scores = torch.einsum("th,ths->ts", w, torch.relu(dots))
    return scores.masked_fill(~causal_mask(t_count), float("-inf")), dots


def select_top_keys(scores, topk):
    """The indexer's choice per row: the min(topk, t+1) keys s <= t with the largest scores,
    equal scores to the lower s. scores [T, T] (float64, -inf above the diagonal).

    Returns (selected bool [T, T], positions int32 [T, topk] ascending, -1 padded).
    """
    t_count = scores.shape[0]
    selected = torch.zeros(t_count, t_count, dtype=torch.bool)
    positions = torch.full((t_count, topk), -1, dtype=torch.int32)
    for t in range(t_count):
        k = min(topk, t + 1)
        order = torch.sort(-scores[t, :t + 1].detach(), stable=True).indices[:k]
        chosen = torch.sort(order).values
        selected[t, chosen] = True
        positions[t, :k] = chosen.to(torch.int32)
    return selected, positions


def topk_margins(scores, topk):
    """Per selecting row (t + 1 > topk): the k-th largest score minus the (k+1)-th (0: a tie,
    resolved by position). Small non-zero margins are where an fp32 engine may choose otherwise."""
    margins = []
    for t in range(topk, scores.shape[0]):
        ordered = torch.sort(scores[t, :t + 1].detach(), descending=True).values
        margins.append(float(ordered[topk - 1] - ordered[topk]))
    return margins


# --- mixture of experts ----------------------------------------------------------------------


def _top_indices(values, k):
    """Indices of the k largest along the last dim, equal values to the lower index."""
    return torch.sort(-values, dim=-1, stable=True).indices[..., :k]


def route(cfg, scores, bias):
    """DeepSeek's group-limited top-k on scores + bias (a discrete choice, no gradient).

    Groups rank by the sum of their two best biased scores (by their best score when the
    checkpoint has no router bias); the best `topk_group` groups are kept, then the best
    `num_experts_per_tok` experts among them. Ties go to the lower group / expert id.
    Returns (selected bool [T, E], group margin [T] or None).
    """
    biased = scores.detach() + (bias if bias is not None else 0.0)
    t_count, n_experts = biased.shape
    margin = None
    if cfg.n_group > 1:
        grouped = biased.reshape(t_count, cfg.n_group, n_experts // cfg.n_group)
        if bias is not None:
            best = torch.sort(grouped, dim=-1, descending=True).values
            group_score = best[..., :2].sum(dim=-1)
        else:
            group_score = grouped.amax(dim=-1)
        kept = torch.zeros(t_count, cfg.n_group, dtype=torch.bool)
        kept.scatter_(1, _top_indices(group_score, cfg.topk_group), True)
        ranked = torch.sort(group_score, dim=-1, descending=True).values
        if cfg.topk_group < cfg.n_group:
            margin = ranked[:, cfg.topk_group - 1] - ranked[:, cfg.topk_group]
        biased = biased.masked_fill(~kept.repeat_interleave(n_experts // cfg.n_group, dim=1),
                                    float("-inf"))
    selected = torch.zeros(t_count, n_experts, dtype=torch.bool)
    selected.scatter_(1, _top_indices(biased, cfg.top_experts), True)
    return selected, margin


def moe(cfg, params, prefix, x, bias):
    """Routed experts weighted by g plus the shared experts.

    g_e = s_e / sum_{selected} s * routed_scaling_factor (norm_topk_prob), else s_e * factor;
    gradients flow through the selected experts and through s of the selected experts.
    Returns (y [T, D], s [T, E] (sigmoid router scores), selected bool [T, E], group margin).
    """
    s = torch.sigmoid(x @ params[prefix + "gate.weight"].T)
    selected, margin = route(cfg, s, bias)
    chosen = s * selected
    if cfg.norm_topk_prob:
        g = chosen / chosen.sum(dim=-1, keepdim=True) * cfg.route_scale
    else:
        g = chosen * cfg.route_scale
    y = torch.zeros_like(x)
    for e in range(cfg.n_experts):
        rows = selected[:, e].nonzero()[:, 0]
        if rows.numel() == 0:
            continue
        out = mlp(params, f"{prefix}experts.{e}.", x[rows])
        # .to(y.dtype): a no-op in fp32/fp64; under torch.autocast (the bf16 speed baseline,
        # scripts/bench_train_torch.py) the expert output is bf16 and y is not.
        y = y.index_add(0, rows, (g[rows, e:e + 1] * out).to(y.dtype))
    if cfg.n_shared > 0:
        y = y + mlp(params, prefix + "shared_experts.", x)
    return y, s, selected, margin


# --- the model -------------------------------------------------------------------------------


class LayerRecord:
    """What the losses need from one layer's forward."""

    def __init__(self):
        self.probs = None  # [T, H, T] main attention softmax (0 outside the row's keys)
        self.index_scores = None  # [T, T] indexer I (-inf above the diagonal), or None
        self.index_dots = None  # [T, Hi, T] detached qI . kI (inf above the diagonal), or None
        self.selected = None  # bool [T, T] the indexer's top-k, or None
        self.topk = None  # int32 [T, index_topk], or None
        self.router_scores = None  # [T, E] sigmoid scores of a MoE layer, or None
        self.routed = None  # bool [T, E] selected experts, or None
        self.route_margin = None  # [T] best kept group minus the best dropped one, or None


def forward(cfg, params, buffers, tokens, attention):
    """One sequence at positions 0 .. T-1. attention: "dense" (K_t = 0..t) or "sparse"
    (K_t = the indexer's top-k of row t). The indexer runs in both modes when the model has
    one (its scores feed the indexer losses), on detached x and cq.

    Returns (logits [T, vocab], [LayerRecord per layer]).
    """
    if attention not in ("dense", "sparse"):
        raise ValueError(f"attention must be 'dense' or 'sparse', got {attention!r}")
    if attention == "sparse" and not cfg.has_indexer:
        raise ValueError("sparse attention needs a DeepseekV32 checkpoint (an indexer)")
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    t_count = tokens.shape[0]
    cos, sin = rope_tables(cfg, t_count, params["model.embed_tokens.weight"].dtype)
    causal = causal_mask(t_count)
    scale = cfg.softmax_scale()
    h = params["model.embed_tokens.weight"][tokens]
    records = []
    for layer in range(cfg.layers):
        rec = LayerRecord()
        p = f"model.layers.{layer}."
        a = p + "self_attn."
        x = rms_norm(h, params[p + "input_layernorm.weight"], cfg.eps)
        cq = query_latent(cfg, params, a, x)
        allowed = causal
        if cfg.has_indexer:
            if cq is None:
                raise ValueError("the indexer needs q_lora_rank > 0")
            rec.index_scores, dots = _indexer(cfg, params, a + "indexer.", x.detach(),
                                              cq.detach(), cos, sin)
            rec.index_dots = dots.detach().masked_fill(~causal.unsqueeze(1), float("inf"))
            rec.selected, rec.topk = select_top_keys(rec.index_scores, cfg.index_topk)
            if attention == "sparse":
                allowed = rec.selected
        out, rec.probs = mla_attention(cfg, params, a, x, cq, cos, sin, allowed, scale)
        h = h + out
        x = rms_norm(h, params[p + "post_attention_layernorm.weight"], cfg.eps)
        if layer >= cfg.first_dense:
            y, rec.router_scores, rec.routed, rec.route_margin = moe(
                cfg, params, p + "mlp.", x, buffers.get(p + ROUTER_BIAS))
        else:
            y = mlp(params, p + "mlp.", x)
        h = h + y
        records.append(rec)
    logits = rms_norm(h, params["model.norm.weight"], cfg.eps) @ params["lm_head.weight"].T
    return logits, records


# --- losses ----------------------------------------------------------------------------------


def token_losses(logits, tokens):
    """-log softmax(logits[t])[tokens[t+1]] for t = 0 .. T-2."""
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return -logp.gather(1, tokens[1:].unsqueeze(1))[:, 0]


def indexer_row_kl(rec, stage):
    """KL(p[t] || softmax(I[t])) per row t, [T].

    stage "warmup": keys s <= t, p = the dense attention averaged over heads. stage "sparse":
    keys = the selected set S_t, p = the (sparse) attention's own softmax over S_t averaged over
    heads. p is a constant; 0 log 0 = 0. d KL[t] / d I[t] = softmax(I[t]) - p[t] on the keys.
    """
    if stage not in ("warmup", "sparse"):
        raise ValueError(f"indexer stage must be 'warmup' or 'sparse', got {stage!r}")
    t_count = rec.index_scores.shape[0]
    keys = causal_mask(t_count) if stage == "warmup" else rec.selected
    p = rec.probs.detach().mean(dim=1)  # [T, T]
    log_q = torch.log_softmax(rec.index_scores.masked_fill(~keys, float("-inf")), dim=-1)
    live = keys & (p > 0)
    log_p = torch.log(torch.where(live, p, torch.ones_like(p)))
    terms = p * (log_p - log_q.masked_fill(~keys, 0.0))
    return torch.where(live, terms, torch.zeros_like(terms)).sum(dim=-1)


def indexer_loss(records, stage):
    """The mean of the row KLs over all rows of all indexer layers (one sequence)."""
    rows = [indexer_row_kl(rec, stage) for rec in records if rec.index_scores is not None]
    return torch.cat(rows).mean()


def balance_loss(cfg, records, alpha):
    """DeepSeek-V3's sequence-wise balance loss of one sequence, summed over MoE layers:
    alpha * sum_e f_e P_e with f_e = E / (k T) * #{t : e selected at t} (a count, constant) and
    P_e = mean_t s[t, e] / sum_e' s[t, e']."""
    total = 0.0
    for rec in records:
        if rec.router_scores is None:
            continue
        s, routed = rec.router_scores, rec.routed
        t_count, n_experts = s.shape
        f = routed.sum(dim=0).to(s.dtype) * (n_experts / (cfg.top_experts * t_count))
        share = (s / s.sum(dim=-1, keepdim=True)).mean(dim=0)
        total = total + alpha * (f * share).sum()
    return total


def batch_loss(cfg, params, buffers, batch, attention="dense", alpha=0.0):
    """The training loss of a batch of sequences: the lm mean over all predicted positions, plus
    alpha * the balance loss averaged over sequences (when alpha > 0).

    Returns (loss, counts, route margin): counts {router bias name: [E] float64 tokens routed to
    each expert}; the smallest kept-minus-dropped group margin of any token (None without MoE).
    """
    nll, predicted, balance = 0.0, 0, 0.0
    counts, margin = {}, None
    for tokens in batch:
        logits, records = forward(cfg, params, buffers, tokens, attention)
        losses = token_losses(logits, tokens)
        nll = nll + losses.sum()
        predicted += losses.numel()
        if alpha > 0:
            balance = balance + balance_loss(cfg, records, alpha)
        for layer, rec in enumerate(records):
            if rec.routed is not None:
                name = f"model.layers.{layer}.{ROUTER_BIAS}"
                counts[name] = counts.get(name, 0) + rec.routed.sum(dim=0).to(F64)
            if rec.route_margin is not None:
                low = float(rec.route_margin.min())
                margin = low if margin is None else min(margin, low)
    loss = nll / predicted
    if alpha > 0:
        loss = loss + balance / len(batch)
    return loss, counts, margin


def gradients(loss, params, names=None, retain_graph=False):
    """d loss / d params[name] for each name (zeros where the loss does not depend on it)."""
    names = sorted(params) if names is None else names
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True,
                                retain_graph=retain_graph)
    return {n: (torch.zeros_like(params[n]) if g is None else g) for n, g in zip(names, grads)}


def trainable(params):
    """Leaf copies of params that require gradients."""
    return {n: t.detach().clone().requires_grad_(True) for n, t in params.items()}


# --- optimizer -------------------------------------------------------------------------------


def learning_rate(step, steps, lr, min_lr, warmup):
    """lr * (i+1)/W for i < W, then cosine from lr (i = W) down to min_lr (i = N-1)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = steps - 1 - warmup
    progress = 1.0 if span <= 0 else (step - warmup) / span
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def clip_gradients(grads, clip):
    """Scales grads in place by clip / (norm + 1e-6) when the global L2 norm exceeds clip.
    Returns the norm before clipping (squares summed in float64 in name order)."""
    norm = math.sqrt(sum(float((grads[n] * grads[n]).sum()) for n in sorted(grads)))
    if norm > clip:
        factor = clip / (norm + CLIP_EPS)
        for n in grads:
            grads[n] = grads[n] * factor
    return norm


class AdamW:
    """PyTorch's AdamW, written out: p <- p - lr wd p; m <- b1 m + (1-b1) g;
    v <- b2 v + (1-b2) g^2; p <- p - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    Weight decay only on the tensors `decays` names (2-D weights)."""

    def __init__(self, params, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = {n: torch.zeros_like(t) for n, t in params.items()}
        self.v = {n: torch.zeros_like(t) for n, t in params.items()}
        self.t = 0

    def step(self, params, grads, lr):
        """Returns the updated params (new tensors, detached)."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        out = {}
        for n in sorted(params):
            p, g = params[n].detach(), grads[n].detach()
            if decays(n, p):
                p = p - lr * self.weight_decay * p
            self.m[n] = b1 * self.m[n] + (1 - b1) * g
            self.v[n] = b2 * self.v[n] + (1 - b2) * g * g
            m_hat = self.m[n] / (1 - b1**self.t)
            v_hat = self.v[n] / (1 - b2**self.t)
            out[n] = p - lr * m_hat / (torch.sqrt(v_hat) + self.eps)
        return out


def update_router_biases(buffers, counts, rate):
    """bias_e += rate * sign(mean_e' c_e' - c_e) for every MoE layer (c: the step's counts)."""
    for name, c in counts.items():
        buffers[name] = buffers[name] + rate * torch.sign(c.mean() - c).to(buffers[name].dtype)


def train(cfg, params, buffers, batch, hp):
    """N optimizer steps on one fixed batch. hp: dict with lr, min_lr, warmup, steps,
    weight_decay, clip, beta1, beta2, eps, router_bias_rate, balance_alpha, attention.

    Each step: loss and gradients at the current parameters and router biases, clip, AdamW with
    the step's learning rate, then the router-bias update from that step's expert counts.
    Returns (params, buffers, history dict of lists: loss, grad_norm, lr, counts, route_margin).
    """
    params = {n: t.detach().clone() for n, t in params.items()}
    buffers = {n: t.clone() for n, t in buffers.items()}
    opt = AdamW(params, (hp["beta1"], hp["beta2"]), hp["eps"], hp["weight_decay"])
    history = {"loss": [], "grad_norm": [], "lr": [], "counts": [], "route_margin": []}
    for step in range(hp["steps"]):
        leaves = trainable(params)
        loss, counts, margin = batch_loss(cfg, leaves, buffers, batch, hp["attention"],
                                          hp["balance_alpha"])
        grads = gradients(loss, leaves)
        norm = clip_gradients(grads, hp["clip"])
        lr = learning_rate(step, hp["steps"], hp["lr"], hp["min_lr"], hp["warmup"])
        params = opt.step(params, grads, lr)
        update_router_biases(buffers, counts, hp["router_bias_rate"])
        history["loss"].append(float(loss))
        history["grad_norm"].append(norm)
        history["lr"].append(lr)
        history["counts"].append(counts)
        history["route_margin"].append(margin)
    return params, buffers, history

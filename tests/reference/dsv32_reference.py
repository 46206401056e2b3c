"""An independent Python reference of DeepSeek-V3.2's forward pass (REF after the 2025-11-17
indexer-RoPE fix), written from dsa-reference.md for making goldens offline.

Numerics. REF keeps activations in bf16 tensors and computes with fp32 accumulation. Here every
tensor is float64 holding exactly the value REF's tensor holds (bf16 or fp32); each operation is
computed in float64 and rounded at REF's rounding points: `bf16()` where REF produces a bf16
tensor (through fp32, as a fp32 accumulator rounded to bf16), `f32()` where REF produces fp32.
Single fp32 additions and multiplications are therefore reproduced exactly; GEMMs and reductions
are summed in float64 (REF's GPU summation order is unknown) and rounded once.

Schedules. `forward(tokens, start_pos)` runs one call of T tokens at absolute positions
start_pos .. start_pos+T-1 against the caches, like REF's Transformer.forward, but returns the
logits of every position. T > 1 is a prefill chunk (REF's "MHA mode", §5.4), T == 1 a decode step
(REF's "MQA mode", §5.5); REF decides the same way (by seqlen > 1). Beyond REF, a prefill chunk
may start at start_pos > 0: its row t sees keys 0 .. start_pos+t; k_nope and v are recomputed from
all cached latents 0 .. start_pos+T-1, and the indexer scores every cached key with the causal
mask for keys after the row's position.

Attention: "sparse" (DSA: the indexer's top-k keys, intersected with the causal mask) or "dense"
(causal only; the indexer still runs so that its intermediates can be compared). A checkpoint
without an indexer (DeepseekV3ForCausalLM) is always dense.
"""

import json
import math
import os

import torch

import fp8
from safetensors_io import read_checkpoint


def bf16(x):
    """Round to bf16 (through fp32, RNE), keep as float64."""
    return x.to(torch.float32).to(torch.bfloat16).to(torch.float64)


def f32(x):
    """Round to fp32, keep as float64."""
    return x.to(torch.float32).to(torch.float64)


def fp32_const(value):
    """A Python scalar as REF's fp32 kernels see it (a scalar operand is cast to fp32)."""
    return float(torch.tensor(value, dtype=torch.float32))


class Config:
    """The Hugging Face config.json fields the forward pass reads."""

    def __init__(self, raw):
        arch = raw["architectures"][0]
        if arch not in ("DeepseekV32ForCausalLM", "DeepseekV3ForCausalLM"):
            raise ValueError(f"config.json: unsupported architecture {arch}")
        self.has_indexer = arch == "DeepseekV32ForCausalLM"
        self.vocab = raw["vocab_size"]
        self.dim = raw["hidden_size"]
        self.layers = raw["num_hidden_layers"]
        self.first_dense = raw.get("first_k_dense_replace", 0)
        self.heads = raw["num_attention_heads"]
        self.q_lora = raw.get("q_lora_rank") or 0
        self.kv_lora = raw["kv_lora_rank"]
        self.nope = raw["qk_nope_head_dim"]
        self.rope = raw["qk_rope_head_dim"]
        self.v_dim = raw["v_head_dim"]
        self.n_experts = raw["n_routed_experts"]
        self.n_shared = raw.get("n_shared_experts", 0)
        self.top_experts = raw["num_experts_per_tok"]
        self.n_group = raw.get("n_group", 1)
        self.topk_group = raw.get("topk_group", 1)
        self.route_scale = raw.get("routed_scaling_factor", 1.0)
        self.norm_topk_prob = raw.get("norm_topk_prob", True)
        self.eps = raw.get("rms_norm_eps", 1e-6)
        self.theta = raw.get("rope_theta", 10000.0)
        self.max_pos = raw.get("max_position_embeddings", 4096)
        self.fp8 = raw.get("quantization_config") is not None
        # One activation scale format for every act_quant (linears, latent cache, indexer). A bf16
        # checkpoint still simulates the FP8 latent cache and FP8 indexer with ue8m0 scales.
        self.scale_fmt = raw["quantization_config"].get("scale_fmt") if self.fp8 else "ue8m0"
        if self.has_indexer:
            self.index_heads = raw["index_n_heads"]
            self.index_dim = raw["index_head_dim"]
            self.index_topk = raw["index_topk"]
            if self.index_dim != fp8.BLOCK:
                # REF's fp8_index kernel takes one fp32 scale per key and per query head.
                raise NotImplementedError("the indexer reference needs index_head_dim == 128")
        scaling = raw.get("rope_scaling")
        self.yarn = None
        if scaling is not None:
            kind = scaling.get("type", scaling.get("rope_type"))
            if kind != "yarn":
                raise ValueError(f"config.json: unsupported rope_scaling type {kind}")
            if self.max_pos > scaling["original_max_position_embeddings"]:
                self.yarn = scaling

    def softmax_scale(self):
        """MLA: qk_head_dim^-0.5 * mscale^2 (§5.2), as a Python float like REF's attribute."""
        scale = (self.nope + self.rope)**-0.5
        if self.yarn is not None:
            mscale = 0.1 * self.yarn.get("mscale_all_dim", 1.0) * math.log(
                self.yarn["factor"]) + 1.0
            scale *= mscale * mscale
        return scale


def rope_frequencies(cfg):
    """REF precompute_freqs_cis's per-pair frequencies, fp32 torch ops as REF writes them."""
    dim = cfg.rope
    freqs = 1.0 / (cfg.theta**(torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if cfg.yarn is None:
        return freqs
    y = cfg.yarn
    original = y["original_max_position_embeddings"]

    def correction_dim(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(cfg.theta))

    low = max(math.floor(correction_dim(y.get("beta_fast", 32.0))), 0)
    high = min(math.ceil(correction_dim(y.get("beta_slow", 1.0))), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    smooth = 1 - ramp
    return freqs / y["factor"] * (1 - smooth) + freqs * smooth


def rope_cos_sin(freqs, positions):
    """cos, sin [len(positions), pairs] of angle = fp32(p) * freqs, fp32 (torch.polar), as f64."""
    angle = torch.outer(torch.tensor(positions, dtype=torch.float32), freqs)
    return angle.cos().to(torch.float64), angle.sin().to(torch.float64)


def apply_rope(x, cos, sin, interleaved):
    """Rotates the last dim of x [T, ..., R] (bf16 values) for rows at cos/sin [T, R/2].

    interleaved (MLA): pairs (2i, 2i+1). Otherwise (indexer): pairs (i, i + R/2). The complex
    product runs in fp32 and the result rounds to bf16.
    """
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (cos.shape[-1],)
    c, s = cos.reshape(shape), sin.reshape(shape)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., :x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    re = f32(f32(a * c) - f32(b * s))
    im = f32(f32(a * s) + f32(b * c))
    if interleaved:
        out = torch.stack([re, im], dim=-1).flatten(-2)
    else:
        out = torch.cat([re, im], dim=-1)
    return bf16(out)


def hadamard_matrix(n):
    """Sylvester Hadamard matrix H[i, j] = (-1)^popcount(i & j), float64 [n, n]."""
    idx = torch.arange(n)
    bits = idx.unsqueeze(1) & idx.unsqueeze(0)
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits = bits >> 1
    return 1.0 - 2.0 * parity.to(torch.float64)


def rotate_activation(x):
    """REF rotate_activation: bf16(H x * n^-0.5) over the last dim (FHT: scale at store time)."""
    n = x.shape[-1]
    return bf16(f32(x @ hadamard_matrix(n).T) * fp32_const(n**-0.5))


def rms_norm(x, weight, eps, residual=None):
    """REF RMSNorm (§2.5). Returns (bf16 output, bf16 residual for the next sub-block)."""
    s = x if residual is None else f32(x + residual)
    var = f32((s * s).mean(dim=-1, keepdim=True))
    inv = f32(1.0 / torch.sqrt(f32(var + fp32_const(eps))))
    out = bf16(f32(weight * f32(s * inv)))
    return out, (x if residual is None else bf16(s))


def layer_norm(x, weight, bias, eps):
    """F.layer_norm on x.float() (biased variance), output rounded to bf16 (§2.6)."""
    mean = f32(x.mean(dim=-1, keepdim=True))
    centered = f32(x - mean)
    var = f32((centered * centered).mean(dim=-1, keepdim=True))
    inv = f32(1.0 / torch.sqrt(f32(var + fp32_const(eps))))
    return bf16(f32(f32(centered * inv) * weight) + bias)


def softmax_bf16(scores):
    """Softmax over the last dim of bf16 scores, fp32 inside, bf16 out (-inf entries give 0)."""
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    e = shifted.exp()
    return bf16(e / e.sum(dim=-1, keepdim=True))


class Linear:
    """A projection W [out, in]: FP8 (values + block scales) or bf16."""

    def __init__(self, weight, scale_inv=None):
        self.scale_inv = scale_inv  # None: bf16 weight
        self.weight = weight  # float64: fp8 values (FP8) or bf16 values

    @property
    def out_features(self):
        return self.weight.shape[0]

    def __call__(self, x, scale_fmt):
        """REF linear(): bf16 output [.., out] from bf16 input [.., in]."""
        flat = x.reshape(-1, x.shape[-1])
        if self.scale_inv is None:
            y = bf16(flat @ self.weight.T)
        else:
            xq, xs = fp8.act_quant(flat, scale_fmt)
            y = bf16(fp8.fp8_gemm(xq, xs, self.weight, self.scale_inv))
        return y.reshape(*x.shape[:-1], self.out_features)

    def dequantized_bf16(self):
        """REF weight_dequant for the decode path: bf16(fp8 * scale); bf16 weights unchanged."""
        if self.scale_inv is None:
            return self.weight
        return bf16(fp8.dequant_weight(self.weight, self.scale_inv))


class Weights:
    """Checkpoint tensors by Hugging Face name, as float64 (bf16/fp32 values exact)."""

    def __init__(self, folder):
        self.tensors, self.dtypes = read_checkpoint(folder)

    def has(self, name):
        return name in self.tensors

    def vector(self, name):
        return self.tensors[name].to(torch.float64)

    def linear(self, prefix):
        name = prefix + ".weight"
        if self.dtypes[name] == "F8_E4M3":
            return Linear(fp8.e4m3_to_float(self.tensors[name]),
                          self.tensors[name + "_scale_inv"].to(torch.float64))
        return Linear(self.tensors[name].to(torch.float64))


class LayerCache:
    """Per-layer caches of every processed position (grown by concatenation)."""

    def __init__(self, cfg):
        self.latent = torch.zeros(0, cfg.kv_lora, dtype=torch.float64)  # bf16 values
        self.k_pe = torch.zeros(0, cfg.rope, dtype=torch.float64)  # bf16 values
        if cfg.has_indexer:
            self.index_key = torch.zeros(0, cfg.index_dim, dtype=torch.float64)  # fp8 values
            self.index_scale = torch.zeros(0, dtype=torch.float64)  # fp32 scale per key

    def append(self, name, value, start):
        current = getattr(self, name)
        if current.shape[0] != start:
            raise ValueError(f"cache holds {current.shape[0]} positions, call starts at {start}")
        setattr(self, name, torch.cat([current, value]))


def select_top_keys(scores, topk, start):
    """Top-k sets per row: scores [T, S] (-inf after row t's position start+t).

    Row t keeps the min(topk, start+t+1) highest-scoring keys among 0..start+t: REF's
    topk(min(topk, S)) followed by re-applying the causal mask (§4.2-§4.4). Equal scores are
    ordered by lower position first (torch leaves the order of ties unspecified).
    Returns (selected bool [T, S], positions int32 [T, topk] ascending, -1 padded).
    """
    t_count, s_count = scores.shape
    selected = torch.zeros(t_count, s_count, dtype=torch.bool)
    positions = torch.full((t_count, topk), -1, dtype=torch.int32)
    for t in range(t_count):
        visible = start + t + 1
        k = min(topk, visible)
        order = torch.sort(-scores[t, :visible], stable=True).indices[:k]
        chosen = torch.sort(order).values
        selected[t, chosen] = True
        positions[t, :k] = chosen.to(torch.int32)
    return selected, positions


class Model:

    def __init__(self, folder, attention="sparse", config_overrides=None):
        with open(os.path.join(folder, "config.json")) as f:
            raw = json.load(f)
        raw.update(config_overrides or {})
        self.cfg = cfg = Config(raw)
        if attention not in ("sparse", "dense"):
            raise ValueError(f"attention must be 'sparse' or 'dense', got {attention!r}")
        self.sparse = attention == "sparse" and cfg.has_indexer
        self.w = Weights(folder)
        self.freqs = rope_frequencies(cfg)
        self.softmax_scale = fp32_const(cfg.softmax_scale())
        self.reset()

    def reset(self):
        self.caches = [LayerCache(self.cfg) for _ in range(self.cfg.layers)]
        self.length = 0

    # --- attention -----------------------------------------------------------------------------

    def indexer(self, p, x, qr, start, cos, sin, cache, trace):
        """Lightning indexer (§3.4-§3.5): scores [T, S] (fp32 values, -inf after each row)."""
        cfg, fmt = self.cfg, self.cfg.scale_fmt
        t_count, hi, di, r = x.shape[0], cfg.index_heads, cfg.index_dim, cfg.rope
        q = self.w.linear(p + "wq_b")(qr, fmt).reshape(t_count, hi, di)
        q = torch.cat([apply_rope(q[..., :r], cos, sin, False), q[..., r:]], dim=-1)
        k = self.w.linear(p + "wk")(x, fmt)
        k = layer_norm(k, self.w.vector(p + "k_norm.weight"), self.w.vector(p + "k_norm.bias"),
                       1e-6)
        k = torch.cat([apply_rope(k[:, :r], cos, sin, False), k[:, r:]], dim=-1)
        q_codes, q_scale = fp8.act_quant(rotate_activation(q), fmt)  # q_scale [T, Hi, 1]
        k_codes, k_scale = fp8.act_quant(rotate_activation(k), fmt)  # k_scale [T, 1]
        cache.append("index_key", k_codes, start)
        cache.append("index_scale", k_scale[:, 0], start)
        # weights_proj in fp32 on x.float(), then * Hi^-0.5, * q_scale, * Di^-0.5 (fp32 each).
        weights = f32(x @ self.w.vector(p + "weights_proj.weight").T)
        weights = f32(weights * fp32_const(hi**-0.5))
        weights = f32(f32(weights * q_scale[..., 0]) * fp32_const(di**-0.5))  # [T, Hi]
        # fp8 x fp8 dot products are exact in float64; ReLU, * weight, sum heads, * key scale.
        dots = torch.einsum("thd,sd->ths", q_codes, cache.index_key)
        per_head = f32(dots.clamp(min=0) * weights.unsqueeze(-1))
        scores = f32(f32(per_head.sum(dim=1)) * cache.index_scale.unsqueeze(0))
        causal = torch.arange(scores.shape[1]).unsqueeze(0) <= (start +
                                                                torch.arange(t_count)).unsqueeze(1)
        scores = scores.masked_fill(~causal, float("-inf"))
        trace["indexer.key"] = k_codes * k_scale
        trace["indexer.weights"] = weights
        trace["indexer.scores"] = scores
        return scores

    def attention(self, layer, x, start, trace):
        cfg, fmt = self.cfg, self.cfg.scale_fmt
        p = f"model.layers.{layer}.self_attn."
        cache = self.caches[layer]
        t_count, h = x.shape[0], cfg.heads
        end = start + t_count
        cos, sin = rope_cos_sin(self.freqs, list(range(start, end)))

        if cfg.q_lora:
            qr, _ = rms_norm(self.w.linear(p + "q_a_proj")(x, fmt),
                             self.w.vector(p + "q_a_layernorm.weight"), cfg.eps)
            trace["q_latent"] = qr
            q = self.w.linear(p + "q_b_proj")(qr, fmt)
        else:
            qr = None
            q = self.w.linear(p + "q_proj")(x, fmt)
        q = q.reshape(t_count, h, cfg.nope + cfg.rope)
        q_nope = q[..., :cfg.nope]
        q_pe = apply_rope(q[..., cfg.nope:], cos, sin, True)
        trace["q"] = torch.cat([q_nope, q_pe], dim=-1)

        kv = self.w.linear(p + "kv_a_proj_with_mqa")(x, fmt)
        latent, _ = rms_norm(kv[:, :cfg.kv_lora], self.w.vector(p + "kv_a_layernorm.weight"),
                             cfg.eps)
        k_pe = apply_rope(kv[:, cfg.kv_lora:], cos, sin, True)
        # Simulated FP8 latent cache: quantize, dequantize, round to bf16 (§5.3). RoPE stays bf16.
        latent = bf16(fp8.act_quant_round_trip(latent, fmt))
        cache.append("latent", latent, start)
        cache.append("k_pe", k_pe, start)
        trace["kv_latent"] = latent
        trace["k_pe"] = k_pe

        allowed = torch.arange(end).unsqueeze(0) <= (start + torch.arange(t_count)).unsqueeze(1)
        if cfg.has_indexer:
            scores = self.indexer(p + "indexer.", x, qr, start, cos, sin, cache, trace)
            selected, positions = select_top_keys(scores, cfg.index_topk, start)
            trace["indexer.topk"] = positions
            if self.sparse:
                allowed &= selected
        mask = torch.where(allowed, 0.0, float("-inf")).to(torch.float64).unsqueeze(1)  # [T,1,S]

        wkv_b = self.w.linear(p + "kv_b_proj")
        if t_count > 1:
            # MHA mode (§5.4): k_nope, v from an FP8 linear on the cached latents.
            kvb = wkv_b(cache.latent, fmt).reshape(end, h, cfg.nope + cfg.v_dim)
            k = torch.cat([kvb[..., :cfg.nope], cache.k_pe.unsqueeze(1).expand(-1, h, -1)], -1)
            v = kvb[..., cfg.nope:]
            s = bf16(torch.einsum("thd,shd->ths", trace["q"], k))
            s = bf16(s * self.softmax_scale) + mask
            out = bf16(torch.einsum("ths,shd->thd", softmax_bf16(s), v))
        else:
            # MQA mode (§5.5): W_UK / W_UV dequantized to bf16 and absorbed.
            w = wkv_b.dequantized_bf16().reshape(h, cfg.nope + cfg.v_dim, cfg.kv_lora)
            q_abs = bf16(torch.einsum("thd,hdc->thc", q_nope, w[:, :cfg.nope]))
            s = bf16(
                bf16(torch.einsum("thc,sc->ths", q_abs, cache.latent)) +
                bf16(torch.einsum("thr,sr->ths", q_pe, cache.k_pe)))
            s = bf16(s * self.softmax_scale) + mask
            o_lat = bf16(torch.einsum("ths,sc->thc", softmax_bf16(s), cache.latent))
            out = bf16(torch.einsum("thc,hdc->thd", o_lat, w[:, cfg.nope:]))
        trace["attn_output"] = out
        return self.w.linear(p + "o_proj")(out.reshape(t_count, h * cfg.v_dim), fmt)

    # --- feed-forward --------------------------------------------------------------------------

    def mlp(self, p, x):
        """REF MLP/Expert: w2(bf16(silu(w1 x) * w3 x)), the product in fp32."""
        fmt = self.cfg.scale_fmt
        a = self.w.linear(p + "gate_proj")(x, fmt)
        b = self.w.linear(p + "up_proj")(x, fmt)
        silu = f32(a * torch.sigmoid(a))
        return self.w.linear(p + "down_proj")(bf16(f32(silu * b)), fmt)

    def gate(self, p, x):
        """REF Gate (§6.3): (weights fp32 [T, k], expert ids [T, k], best biased score first)."""
        cfg = self.cfg
        logits = f32(x @ self.w.vector(p + "gate.weight").T)
        scores = f32(torch.sigmoid(logits))
        original = scores
        has_bias = self.w.has(p + "gate.e_score_correction_bias")
        if has_bias:
            scores = f32(scores + self.w.vector(p + "gate.e_score_correction_bias"))
        if cfg.n_group > 1:
            grouped = scores.reshape(x.shape[0], cfg.n_group, -1)
            if has_bias:
                group_score = f32(grouped.topk(2, dim=-1).values.sum(dim=-1))
            else:
                group_score = grouped.amax(dim=-1)
            keep = group_score.topk(cfg.topk_group, dim=-1).indices
            dropped = torch.ones(x.shape[0], cfg.n_group, dtype=torch.bool)
            dropped.scatter_(1, keep, False)
            scores = grouped.masked_fill(dropped.unsqueeze(-1), float("-inf")).flatten(1)
        ids = scores.topk(cfg.top_experts, dim=-1).indices
        weights = original.gather(1, ids)
        if cfg.norm_topk_prob:
            weights = f32(weights / f32(weights.sum(dim=-1, keepdim=True)))
        weights = f32(weights * fp32_const(cfg.route_scale))
        return weights, ids

    def moe(self, layer, x, trace):
        """REF MoE (§6.4): fp32 sum in ascending expert order, shared expert last, then bf16."""
        p = f"model.layers.{layer}.mlp."
        weights, ids = self.gate(p, x)
        trace["moe.expert_ids"] = ids.to(torch.int32)
        trace["moe.expert_weights"] = weights
        y = torch.zeros_like(x)
        for e in range(self.cfg.n_experts):
            rows, slots = torch.where(ids == e)
            if rows.numel() == 0:
                continue
            out = self.mlp(f"{p}experts.{e}.", x[rows])
            y[rows] = f32(y[rows] + f32(out * weights[rows, slots].unsqueeze(-1)))
        if self.cfg.n_shared > 0:
            y = f32(y + self.mlp(p + "shared_experts.", x))
        return bf16(y)

    # --- model ---------------------------------------------------------------------------------

    def forward(self, tokens, start_pos):
        """One call: tokens [T] at positions start_pos.. Returns (logits fp32 [T, vocab] as
        float64, dict of the call's named intermediates [T, ...])."""
        if start_pos != self.length:
            raise ValueError(f"call starts at {start_pos}, but {self.length} positions are cached")
        cfg, w = self.cfg, self.w
        traces = {}
        h = w.vector("model.embed_tokens.weight")[torch.as_tensor(tokens, dtype=torch.int64)]
        residual = None
        for layer in range(cfg.layers):
            trace = {}
            p = f"model.layers.{layer}."
            x, residual = rms_norm(h, w.vector(p + "input_layernorm.weight"), cfg.eps, residual)
            trace["attn_norm"] = x
            a = self.attention(layer, x, start_pos, trace)
            trace["attn"] = a
            x, residual = rms_norm(a, w.vector(p + "post_attention_layernorm.weight"), cfg.eps,
                                   residual)
            trace["ffn_norm"] = x
            h = self.moe(layer, x, trace) if layer >= cfg.first_dense else self.mlp(p + "mlp.", x)
            trace["ffn"] = h
            traces.update({f"layers.{layer}.{k}": v for k, v in trace.items()})
        norm, _ = rms_norm(h, w.vector("model.norm.weight"), cfg.eps, residual)
        logits = f32(norm @ w.vector("lm_head.weight").T)  # fp32 head on h.float()
        self.length += len(tokens)
        traces["norm"] = norm
        traces["logits"] = logits
        return logits, traces


def run_schedule(model, tokens, prefill, chunk):
    """Prefill tokens[:prefill] in calls of `chunk` tokens (starts 0, chunk, 2*chunk, ...), then
    decode the rest one token a call. Returns every named intermediate and the logits,
    concatenated over the calls ([T, ...]; indexer.scores padded with -inf to [T, T])."""
    model.reset()
    calls = [(s, min(s + chunk, prefill)) for s in range(0, prefill, chunk)]
    calls += [(s, s + 1) for s in range(prefill, len(tokens))]
    outputs = [model.forward(tokens[begin:end], begin)[1] for begin, end in calls]
    total = len(tokens)
    result = {}
    for name in outputs[0]:
        parts = [o[name] for o in outputs]
        if name.endswith("indexer.scores"):
            parts = [
                torch.nn.functional.pad(x, (0, total - x.shape[1]), value=float("-inf"))
                for x in parts
            ]
        result[name] = torch.cat(parts)
    return result

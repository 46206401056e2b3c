"""FP8 e4m3fn emulation for torch 1.13 (which has no float8 dtypes), dsa-reference.md §2.1-§2.4.

e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN; largest
finite 448 (code 0x7E); subnormals are multiples of 2^-9. Conversion from float rounds to the
nearest value, ties to the even code; magnitudes above 464 (halfway between 448 and the missing
480) become NaN, as c10's float -> float8_e4m3fn conversion does. act_quant clamps to +-448 first,
so it never produces NaN.

Every function works on float64 tensors holding exactly representable values (fp8 values, fp32
scales) so that products and sums of them are exact or correctly rounded.
"""

import torch

BLOCK = 128  # FP8 block size of weights and activations
FP8_MAX = 448.0
AMAX_FLOOR = float(torch.tensor(1e-4, dtype=torch.float32))  # REF's fp32 constant 1e-4
INV_FP8_MAX = float(torch.tensor(1.0 / 448.0, dtype=torch.float32))  # fl32(1/448)


def _code_value(code):
    """The value of one e4m3fn code, from its fields (NaN for the two NaN codes)."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent = (code >> 3) & 0xF
    mantissa = code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa * 2.0**-9  # subnormal: mantissa/8 * 2^(1-7)
    return sign * (1.0 + mantissa / 8.0) * 2.0**(exponent - 7)


# DECODE[c] = value of code c, float64 [256].
DECODE = torch.tensor([_code_value(c) for c in range(256)], dtype=torch.float64)

# Rounding grid for magnitudes: codes 0x00..0x7E (0 .. 448) ascending, then 480 standing for the
# NaN code 0x7F, so that everything nearer 480 than 448 rounds to NaN.
_GRID = torch.cat([DECODE[:0x7F], torch.tensor([480.0], dtype=torch.float64)])


def e4m3_to_float(codes):
    """uint8 codes -> float64 values."""
    return DECODE[codes.to(torch.int64)]


def float_to_e4m3(x):
    """Float tensor -> uint8 codes, round to nearest, ties to the even code (c10 semantics)."""
    x = x.to(torch.float64)
    magnitude = x.abs()
    upper = torch.searchsorted(_GRID, magnitude.clamp(max=480.0)).clamp(1, 0x7F)
    lower = upper - 1
    below = magnitude - _GRID[lower]
    above = _GRID[upper] - magnitude
    take_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    code = torch.where(take_upper, upper, lower)
    code = torch.where(magnitude == 0, torch.zeros_like(code), code)
    code = torch.where(torch.isnan(x) | (magnitude >= 480.0), torch.full_like(code, 0x7F), code)
    sign = torch.signbit(x).to(torch.int64) << 7
    return (code | sign).to(torch.uint8)


def round_e4m3(x):
    """x rounded to the nearest e4m3fn value (float64)."""
    return e4m3_to_float(float_to_e4m3(x))


def pow2_ceil(s):
    """2^ceil(log2(s)) for positive normal fp32 values s (float64 tensor), exactly."""
    mantissa, exponent = torch.frexp(s)  # s = mantissa * 2^exponent, mantissa in [0.5, 1)
    exponent = torch.where(mantissa == 0.5, exponent - 1, exponent)
    return torch.ldexp(torch.ones_like(s), exponent)


def act_quant(x, scale_fmt):
    """REF act_quant(x, 128, scale_fmt) on bf16 values x [..., N], N a multiple of 128.

    Returns (values [..., N] float64: the fp8 values (not yet scaled), scales [..., N/128] float64
    holding fp32 values). scale_fmt "ue8m0": scales rounded up to powers of two; None: plain.
    """
    n = x.shape[-1]
    if n % BLOCK:
        raise ValueError(f"act_quant needs a multiple of {BLOCK} elements, got {n}")
    groups = x.to(torch.float64).reshape(*x.shape[:-1], n // BLOCK, BLOCK)
    amax = groups.abs().amax(dim=-1).clamp(min=AMAX_FLOOR)
    scale = (amax * INV_FP8_MAX).to(torch.float32).to(torch.float64)  # fp32 product
    if scale_fmt == "ue8m0":
        scale = pow2_ceil(scale)
    elif scale_fmt is not None:
        raise ValueError(f"unknown scale_fmt {scale_fmt!r}")
    # fp32 division (exact for power-of-two scales), clamp, then RNE to e4m3.
    ratio = (groups / scale.unsqueeze(-1)).to(torch.float32).to(torch.float64)
    values = round_e4m3(ratio.clamp(-FP8_MAX, FP8_MAX))
    return values.reshape(x.shape), scale


def act_quant_round_trip(x, scale_fmt):
    """fp8 value * scale: the dequantized activations (float64; exact for ue8m0 scales)."""
    values, scale = act_quant(x, scale_fmt)
    n = x.shape[-1]
    blocks = values.reshape(*x.shape[:-1], n // BLOCK, BLOCK) * scale.unsqueeze(-1)
    return blocks.to(torch.float32).to(torch.float64).reshape(x.shape)


def expand_weight_scale(scale_inv, rows, cols):
    """[ceil(rows/128), ceil(cols/128)] block scales -> [rows, cols], one per weight element."""
    return scale_inv.repeat_interleave(BLOCK, 0)[:rows].repeat_interleave(BLOCK, 1)[:, :cols]


def dequant_weight(values, scale_inv):
    """FP8 weight values [out, in] times their block scales (fp32 products, as float64)."""
    full = expand_weight_scale(scale_inv.to(torch.float64), *values.shape)
    return (values * full).to(torch.float32).to(torch.float64)


def fp8_gemm(x_values, x_scale, w_values, w_scale_inv):
    """REF fp8_gemm: y[m, n] = sum_k-blocks (sum_kk xq*wq) * fl32(s_x[m, kb] * S[n/128, kb]).

    x_values [M, K] fp8 values, x_scale [M, K/128]; w_values [N, K], w_scale_inv [ceil(N/128),
    K/128]. The block sums of fp8 products are exact in float64 (they are multiples of 2^-18 below
    2^25); the block results are summed in float64 and rounded once to fp32. Returns float64 [M, N]
    holding fp32 values (the caller rounds to bf16 as REF does).
    """
    m, k = x_values.shape
    n = w_values.shape[0]
    w_scale_rows = w_scale_inv.to(torch.float64).repeat_interleave(BLOCK, 0)[:n]  # [N, K/128]
    acc = torch.zeros(m, n, dtype=torch.float64)
    for kb in range(k // BLOCK):
        cols = slice(kb * BLOCK, (kb + 1) * BLOCK)
        partial = x_values[:, cols] @ w_values[:, cols].T
        scale = (x_scale[:, kb:kb + 1] * w_scale_rows[:, kb].unsqueeze(0)).to(torch.float32)
        acc += partial * scale.to(torch.float64)
    return acc.to(torch.float32).to(torch.float64)

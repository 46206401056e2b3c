#!/usr/bin/python3
"""Self-checks of the Python reference: FP8 emulation, Hadamard, RoPE, and consistency of the
model across schedules. Run: /usr/bin/python3 tests/reference/self_test.py (the model checks need
build/release/dsa to make checkpoints and are skipped without it)."""

import math
import os
import struct
import tempfile
import unittest

import torch

import dsv32_reference as ref
import fp8
import make_goldens
from safetensors_io import read_file

U_BF16 = 2.0**-9  # bf16 unit roundoff (8 significant bits, round to nearest)


def f32_bits(value):
    return struct.unpack("<I", struct.pack("<f", value))[0]


def f32_from_bits(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def bitwise_e4m3(value):
    """An independent encoder working on the float32 bit pattern (c10's algorithm shape)."""
    bits = f32_bits(value)
    sign = (bits >> 24) & 0x80
    magnitude = bits & 0x7FFFFFFF
    if magnitude >= f32_bits(480.0):  # also inf and NaN
        return sign | 0x7F
    if magnitude == 0:
        return sign

    def shift_rne(x, shift):
        kept, rest, half = x >> shift, x & ((1 << shift) - 1), 1 << (shift - 1)
        return kept + (1 if rest > half or (rest == half and kept & 1) else 0)

    exponent = (magnitude >> 23) - 127
    if exponent < -6:  # subnormal result, units of 2^-9
        if exponent < -11:
            return sign
        return sign | shift_rne((magnitude & 0x7FFFFF) | 0x800000, 14 - exponent)
    return sign | shift_rne(((exponent + 7) << 23) | (magnitude & 0x7FFFFF), 20)


class Fp8Test(unittest.TestCase):

    def test_every_code_decodes_as_expected(self):
        values = fp8.DECODE
        expected = {0x00: 0.0, 0x01: 2.0**-9, 0x07: 7 * 2.0**-9, 0x08: 2.0**-6, 0x38: 1.0,
                    0x39: 1.125, 0x3F: 1.875, 0x40: 2.0, 0x77: 240.0, 0x7E: 448.0}
        for code, value in expected.items():
            self.assertEqual(float(values[code]), value, hex(code))
        self.assertTrue(math.isnan(values[0x7F]) and math.isnan(values[0xFF]))
        self.assertTrue(float(values[0x80]) == 0.0 and math.copysign(1, values[0x80]) < 0)
        positive = values[:0x7F]
        self.assertTrue(bool((positive[1:] > positive[:-1]).all()), "codes 0..0x7E ascend")
        for code in range(1, 0x7F):
            self.assertEqual(float(values[code | 0x80]), -float(values[code]))
            # Within a binade (and among subnormals) the step is the binade's ulp.
            exponent = max(code >> 3, 1)
            step = 2.0**(exponent - 7 - 3)
            if code & 7:
                self.assertEqual(float(values[code] - values[code - 1]), step, hex(code))

    def test_codes_round_trip(self):
        codes = torch.tensor([c for c in range(256) if c not in (0x7F, 0xFF)])
        self.assertTrue(torch.equal(fp8.float_to_e4m3(fp8.e4m3_to_float(codes)),
                                    codes.to(torch.uint8)))

    def test_midpoints_round_to_even_code(self):
        for code in range(0, 0x7E):
            lo, hi = float(fp8.DECODE[code]), float(fp8.DECODE[code + 1])
            mid = (lo + hi) / 2  # exact in float32: one more bit than the codes have
            even = code if code % 2 == 0 else code + 1
            for sign in (0, 0x80):
                s = -1.0 if sign else 1.0
                got = int(fp8.float_to_e4m3(torch.tensor([s * mid], dtype=torch.float32))[0])
                self.assertEqual(got, even | sign, f"midpoint {s * mid}")
                below = f32_from_bits(f32_bits(mid) - 1)
                above = f32_from_bits(f32_bits(mid) + 1)
                pair = torch.tensor([s * below, s * above], dtype=torch.float32)
                self.assertEqual(fp8.float_to_e4m3(pair).tolist(), [code | sign, code + 1 | sign])

    def test_overflow_and_saturating_clamp(self):
        just_above_464 = f32_from_bits(f32_bits(464.0) + 1)
        cases = [(448.0, 0x7E), (460.0, 0x7E), (464.0, 0x7E), (just_above_464, 0x7F),
                 (480.0, 0x7F), (1e30, 0x7F), (float("inf"), 0x7F), (-464.0, 0xFE),
                 (2.0**-10, 0x00), (3 * 2.0**-10, 0x02), (-(2.0**-11), 0x80)]
        for value, code in cases:
            got = int(fp8.float_to_e4m3(torch.tensor([value], dtype=torch.float32))[0])
            self.assertEqual(got, code, f"{value}")
        # act_quant clamps to +-448 before converting: never NaN, the block maximum hits 448.
        x = torch.tensor([[1000.0] + [-3.0] * 127], dtype=torch.float64)
        for fmt in ("ue8m0", None):
            values, scale = fp8.act_quant(x, fmt)
            self.assertFalse(bool(values.isnan().any()))
            self.assertLessEqual(float(values.abs().max()), 448.0)
        values, scale = fp8.act_quant(x, None)
        self.assertEqual(float(values[0, 0]), 448.0)

    def test_encoder_matches_bitwise_encoder(self):
        generator = torch.Generator().manual_seed(3)
        exponents = torch.randint(-14, 10, (20000,), generator=generator).to(torch.float32)
        x = torch.randn(20000, generator=generator) * torch.pow(2.0, exponents)
        got = fp8.float_to_e4m3(x).tolist()
        for value, code in zip(x.tolist(), got):
            self.assertEqual(code, bitwise_e4m3(value), f"{value!r}")

    def test_act_quant_scales(self):
        generator = torch.Generator().manual_seed(4)
        x = ref.bf16(torch.randn(6, 256, generator=generator, dtype=torch.float64) * 3)
        x[1, :128] = 0  # amax floor 1e-4
        values, scale = fp8.act_quant(x, "ue8m0")
        mantissa, _ = torch.frexp(scale)
        self.assertTrue(bool((mantissa == 0.5).all()), "ue8m0 scales are powers of two")
        amax = x.reshape(6, 2, 128).abs().amax(-1).clamp(min=fp8.AMAX_FLOOR)
        self.assertTrue(bool((scale >= amax / 448).all() & (scale < amax / 224).all()))
        self.assertEqual(float(scale[1, 0]), 2.0**math.ceil(math.log2(fp8.AMAX_FLOOR / 448)))
        # Power-of-two scales dequantize exactly: round trip == fp8 rounding of x / s, times s.
        trip = fp8.act_quant_round_trip(x, "ue8m0")
        block = x.reshape(6, 2, 128) / scale.unsqueeze(-1)
        expected = fp8.round_e4m3(block) * scale.unsqueeze(-1)
        self.assertTrue(torch.equal(trip, expected.reshape(6, 256)))


class RopeHadamardTest(unittest.TestCase):

    def test_hadamard_orthonormal(self):
        h = ref.hadamard_matrix(128)
        self.assertTrue(torch.equal(h @ h.T, 128 * torch.eye(128, dtype=torch.float64)))
        self.assertTrue(torch.equal(h, h.T))
        self.assertEqual(h[1, :4].tolist(), [1, -1, 1, -1])
        self.assertEqual(h[3, :4].tolist(), [1, -1, -1, 1])
        generator = torch.Generator().manual_seed(5)
        q = ref.bf16(torch.randn(128, generator=generator, dtype=torch.float64))
        k = ref.bf16(torch.randn(128, generator=generator, dtype=torch.float64))
        rq, rk = ref.rotate_activation(q), ref.rotate_activation(k)
        # Each rotated element carries one bf16 rounding: relative error <= u per element.
        bound = 2 * U_BF16 * float(q.norm() * k.norm())
        self.assertLess(abs(float(rq @ rk - q @ k)), bound)

    def test_rope_layouts_on_a_hand_example(self):
        x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
        cos = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
        sin = torch.tensor([[0.75, 1.0]], dtype=torch.float64)
        # MLA, interleaved pairs (x0, x1), (x2, x3) with angles 0 and 1:
        #   [1*.5 - 2*.75, 1*.75 + 2*.5, 3*.25 - 4*1, 3*1 + 4*.25]
        self.assertEqual(ref.apply_rope(x, cos, sin, True).tolist(), [[-1.0, 1.75, -3.25, 4.0]])
        # Indexer, halves (x0, x2), (x1, x3):
        #   [1*.5 - 3*.75, 2*.25 - 4*1, 1*.75 + 3*.5, 2*1 + 4*.25]
        self.assertEqual(ref.apply_rope(x, cos, sin, False).tolist(), [[-1.75, -3.5, 2.25, 3.0]])

    def test_position_zero_is_identity(self):
        cfg = ref.Config(make_671b_config())
        cos, sin = ref.rope_cos_sin(ref.rope_frequencies(cfg), [0])
        x = ref.bf16(torch.randn(1, 64, dtype=torch.float64))
        for interleaved in (True, False):
            self.assertTrue(torch.equal(ref.apply_rope(x, cos, sin, interleaved), x))

    def test_yarn_frequencies_and_softmax_scale_of_671b(self):
        cfg = ref.Config(make_671b_config())
        freqs = ref.rope_frequencies(cfg)
        # dsa-reference.md §2.7 (fp32 values) and §5.2.
        expected = {0: 1.0, 10: 5.623413e-2, 11: 3.900693e-2, 16: 5.5e-3, 22: 1.778279e-4,
                    23: 3.333804e-5, 31: 3.333804e-6}
        for i, value in expected.items():
            self.assertAlmostEqual(float(freqs[i]) / value, 1.0, delta=1e-6, msg=f"pair {i}")
        self.assertAlmostEqual(cfg.softmax_scale(), 0.1352337788608801, delta=1e-15)


def make_671b_config():
    return {
        "architectures": ["DeepseekV32ForCausalLM"], "vocab_size": 129280, "hidden_size": 7168,
        "num_hidden_layers": 61, "num_attention_heads": 128, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "n_routed_experts": 256, "num_experts_per_tok": 8, "index_n_heads": 64,
        "index_head_dim": 128, "index_topk": 2048, "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
    }


DSA = os.path.join(make_goldens.REPO, "build", "release", "dsa")


@unittest.skipUnless(os.access(DSA, os.X_OK), "needs build/release/dsa to make checkpoints")
class ModelConsistencyTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.TemporaryDirectory(prefix="dsa_ref_selftest_")
        cls.folders = {}
        for dtype in ("fp8", "bf16"):
            folder = os.path.join(cls.work.name, dtype)
            make_goldens.build_checkpoint(DSA, "tiny", 7, dtype, folder)
            cls.folders[dtype] = folder
        cls.tokens = make_goldens.golden_tokens(1024)

    @classmethod
    def tearDownClass(cls):
        cls.work.cleanup()

    def run_model(self, dtype, prefill, chunk, attention="sparse", overrides=None):
        model = ref.Model(self.folders[dtype], attention, overrides)
        return ref.run_schedule(model, self.tokens, prefill, chunk)

    def test_chunked_prefill_equals_whole_prefill(self):
        # Every row's arithmetic is independent of how positions are grouped into calls
        # (per-token act_quant, masked keys add exactly 0), so here the two agree bit for bit; an
        # implementation with another summation order agrees to bf16 level.
        for dtype in ("fp8", "bf16"):
            chunked = self.run_model(dtype, 24, 10)
            whole = self.run_model(dtype, 24, 24)
            for name in chunked:
                self.assertTrue(torch.equal(chunked[name], whole[name]), f"{dtype} {name}")

    def test_sparse_equals_dense_when_topk_covers_the_sequence(self):
        for dtype in ("fp8", "bf16"):
            sparse = self.run_model(dtype, 24, 10, "sparse", {"index_topk": 64})
            dense = self.run_model(dtype, 24, 10, "dense", {"index_topk": 64})
            for name in sparse:
                self.assertTrue(torch.equal(sparse[name], dense[name]), f"{dtype} {name}")

    def test_selection_matters_in_the_goldens(self):
        sparse = self.run_model("fp8", 24, 10)
        dense = self.run_model("fp8", 24, 10, "dense")
        self.assertFalse(torch.equal(sparse["logits"], dense["logits"]))

    def test_all_decode_matches_prefill(self):
        # MHA (prefill) and MQA (decode) round different intermediates to bf16: MHA rounds k_nope
        # and v per key, the scores, the scaled scores, the probabilities and the output; MQA the
        # dequantized W_UK / W_UV, q_abs, both score parts and their sum, the scaled scores, the
        # probabilities, o_lat and the output. Each rounding moves the result by at most u of
        # the magnitude it carries; about 8 on each side give |diff| <= 16 u max|out|.
        runs = {}
        for dtype in ("fp8", "bf16"):
            prefill = self.run_model(dtype, 40, 40, "dense")
            decode = self.run_model(dtype, 0, 1, "dense")
            runs[dtype] = prefill, decode
            out_p, out_d = prefill["layers.0.attn_output"], decode["layers.0.attn_output"]
            bound = 16 * U_BF16 * float(out_p.abs().max())
            self.assertLess(float((out_p - out_d).abs().max()), bound, dtype)
            # The layer-0 indexer sees identical inputs in both schedules.
            for name in ("layers.0.indexer.scores", "layers.0.indexer.topk"):
                self.assertTrue(torch.equal(prefill[name], decode[name]), name)
        # With bf16 weights the difference stays at bf16 level through the whole model (same
        # bound on the logits). FP8 weights re-quantize every projection input to e4m3 (3
        # mantissa bits), which turns bf16-level input changes into FP8-level output changes and
        # can flip MoE routing, so FP8 runs are only compared at the first attention above.
        prefill, decode = runs["bf16"]
        lp, ld = prefill["logits"], decode["logits"]
        self.assertLess(float((lp - ld).abs().max()), 16 * U_BF16 * float(lp.abs().max()))

    def test_committed_goldens_are_reproducible(self):
        folder = os.path.join(make_goldens.REPO, "tests", "data", "model_goldens")
        for case, (preset, seed, dtype, attention, prefill, chunk, _) in make_goldens.CASES.items():
            if preset != "tiny":
                continue
            tensors, _, metadata = read_file(os.path.join(folder, case + ".safetensors"))
            self.assertEqual(metadata["checkpoint_sha256"],
                             make_goldens.checkpoint_sha256(self.folders[dtype]))
            results = self.run_model(dtype, prefill, chunk, attention)
            for name, value in tensors.items():
                if name == "tokens":
                    self.assertTrue(torch.equal(value.long(), self.tokens))
                    continue
                expected = results[name].to(value.dtype)
                self.assertTrue(torch.equal(value, expected), f"{case} {name}")


if __name__ == "__main__":
    unittest.main(verbosity=2)

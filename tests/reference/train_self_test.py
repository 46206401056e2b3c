#!/usr/bin/python3
"""Self-checks of the training reference (train_reference.py) and of its goldens.

Run: /usr/bin/python3 tests/reference/train_self_test.py. The checks on the micro model need
build/release/dsa (to make the checkpoint) and are skipped without it.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

import torch

import dsv32_reference as inference
import fp8
import make_train_goldens as goldens
import train_reference as tr
from safetensors_io import read_checkpoint, read_file

F64 = torch.float64
DSA = os.path.join(goldens.REPO, "build", "release", "dsa")


def small_config():
    """The micro config shrunk for gradcheck (the Jacobian is taken column by column)."""
    with open(goldens.CONFIG) as f:
        raw = json.load(f)
    raw.update({
        "hidden_size": 8,
        "num_attention_heads": 2,
        "q_lora_rank": 6,
        "kv_lora_rank": 8,
        "qk_nope_head_dim": 4,
        "qk_rope_head_dim": 4,
        "v_head_dim": 4,
        "moe_intermediate_size": 3,
    })
    cfg = inference.Config(raw)
    cfg.index_dim = 8  # Config insists on 128 (the inference FP8 kernel); the math does not
    return cfg


def randn(*shape, scale=1.0, generator=None):
    return (torch.randn(*shape, dtype=F64, generator=generator) * scale).requires_grad_(True)


class GradcheckTest(unittest.TestCase):
    """torch.autograd.gradcheck (central differences in float64 against autograd) of the pieces."""

    T = 6

    def setUp(self):
        torch.manual_seed(5)
        self.cfg = small_config()
        self.cos, self.sin = tr.rope_tables(self.cfg, self.T)

    def test_attention(self):
        cfg, t = self.cfg, self.T
        h, qk, lat = cfg.heads, cfg.nope + cfg.rope, cfg.kv_lora
        # Some rows see a strict subset of their causal keys, as sparse rows do.
        allowed = tr.causal_mask(t) & (torch.rand(t, t) < 0.7)
        allowed |= torch.eye(t, dtype=torch.bool)
        allowed[4, 4] = False
        names = ["q_b_proj.weight", "kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight",
                 "kv_b_proj.weight", "o_proj.weight"]
        shapes = [(h * qk, cfg.q_lora), (lat + cfg.rope, cfg.dim), (lat,),
                  (h * (cfg.nope + cfg.v_dim), lat), (cfg.dim, h * cfg.v_dim)]
        weights = [randn(*s, scale=0.5) for s in shapes]

        def f(x, cq, *w):
            params = dict(zip(names, w))
            out, probs = tr.mla_attention(cfg, params, "", x, cq, self.cos, self.sin, allowed,
                                          cfg.softmax_scale())
            return out, probs

        inputs = [randn(t, cfg.dim), randn(t, cfg.q_lora)] + weights
        self.assertTrue(torch.autograd.gradcheck(f, inputs))
        _, probs = f(*inputs)
        self.assertTrue(torch.all(probs[~allowed.unsqueeze(1).expand_as(probs)] == 0))

    def test_query_latent(self):
        cfg = self.cfg
        f = lambda x, a, n: tr.query_latent(cfg, {"q_a_proj.weight": a, "q_a_layernorm.weight": n
                                                  }, "", x)
        self.assertTrue(
            torch.autograd.gradcheck(
                f, [randn(self.T, cfg.dim),
                    randn(cfg.q_lora, cfg.dim),
                    randn(cfg.q_lora)]))

    def test_indexer(self):
        cfg, t = self.cfg, self.T
        hi, di = cfg.index_heads, cfg.index_dim
        names = ["wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias", "weights_proj.weight"]
        weights = [randn(hi * di, cfg.q_lora), randn(di, cfg.dim), randn(di), randn(di),
                   randn(hi, cfg.dim)]
        causal = tr.causal_mask(t)

        def f(x, cq, *w):
            scores = tr.indexer_scores(cfg, dict(zip(names, w)), "", x, cq, self.cos, self.sin)
            return scores[causal]

        inputs = [randn(t, cfg.dim), randn(t, cfg.q_lora)] + weights
        # ReLU has a kink at 0: the check is only meaningful away from it.
        _, dots = tr._indexer(cfg, dict(zip(names, weights)), "", inputs[0], inputs[1], self.cos,
                              self.sin)
        self.assertGreater(float(dots.abs().min()), 1e-4)
        self.assertTrue(torch.autograd.gradcheck(f, inputs))

    def test_moe(self):
        cfg, t = self.cfg, self.T
        e, inter = cfg.n_experts, 3
        names = ["gate.weight"]
        shapes = [(e, cfg.dim)]
        for prefix in [f"experts.{i}." for i in range(e)] + ["shared_experts."]:
            names += [prefix + "gate_proj.weight", prefix + "up_proj.weight",
                      prefix + "down_proj.weight"]
            shapes += [(inter, cfg.dim), (inter, cfg.dim), (cfg.dim, inter)]
        weights = [randn(*s) for s in shapes]
        bias = torch.tensor([0.05, -0.02, 0.0, 0.01], dtype=F64)

        def f(x, *w):
            y, s, _, _ = tr.moe(cfg, dict(zip(names, w)), "", x, bias)
            return y, s

        x = randn(t, cfg.dim)
        _, _, selected, margin = tr.moe(cfg, dict(zip(names, weights)), "", x, bias)
        self.assertGreater(float(margin.min()), 1e-4)  # the routing stays put under the steps
        self.assertTrue(bool(selected[:, :2].all(1).any()) and bool(selected[:, 2:].all(1).any()))
        self.assertTrue(torch.autograd.gradcheck(f, [x] + weights))

    def test_indexer_kl(self):
        t = self.T
        rec = tr.LayerRecord()
        rec.selected = tr.causal_mask(t) & (torch.rand(t, t) < 0.6) | torch.eye(t, dtype=bool)
        logits = torch.randn(t, 2, t, dtype=F64)
        for stage, keys in (("warmup", tr.causal_mask(t)), ("sparse", rec.selected)):
            rec.probs = torch.softmax(logits.masked_fill(~keys.unsqueeze(1), float("-inf")), -1)

            def f(scores):
                rec.index_scores = scores.masked_fill(~tr.causal_mask(t), float("-inf"))
                return tr.indexer_row_kl(rec, stage)

            self.assertTrue(torch.autograd.gradcheck(f, [randn(t, t)]), stage)

    def test_balance_loss(self):
        cfg, t = self.cfg, self.T
        rec = tr.LayerRecord()
        rec.routed, _ = tr.route(cfg, torch.rand(t, cfg.n_experts, dtype=F64), None)

        def f(logits):
            rec.router_scores = torch.sigmoid(logits)
            return tr.balance_loss(cfg, [rec], 0.3)

        self.assertTrue(torch.autograd.gradcheck(f, [randn(t, cfg.n_experts)]))


class FormulaTest(unittest.TestCase):
    """The pieces against direct formulas and hand examples."""

    def test_rope_layouts(self):
        cos = torch.tensor([[0.6, 1.0]], dtype=F64)
        sin = torch.tensor([[0.8, 0.0]], dtype=F64)
        x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=F64)
        # interleaved: pairs (0,1), (2,3); halves: pairs (0,2), (1,3).
        want = torch.tensor([[0.6 * 1 - 0.8 * 2, 0.8 * 1 + 0.6 * 2, 3.0, 4.0]], dtype=F64)
        self.assertTrue(torch.allclose(tr.rope_interleaved(x, cos, sin), want, rtol=1e-15))
        want = torch.tensor([[0.6 * 1 - 0.8 * 3, 2.0, 0.8 * 1 + 0.6 * 3, 4.0]], dtype=F64)
        self.assertTrue(torch.allclose(tr.rope_halves(x, cos, sin), want, rtol=1e-15))

    def test_rope_table_is_the_yarn_table(self):
        cfg = small_config()
        cos, sin = tr.rope_tables(cfg, 5)
        freqs = inference.rope_frequencies(cfg).to(F64)
        self.assertEqual(cos[0].tolist(), [1.0] * 2)
        self.assertTrue(torch.equal(sin[3], torch.sin(3 * freqs)))
        # YaRN is on (64 > 16): the slowest pair runs factor times slower than plain RoPE.
        self.assertAlmostEqual(float(freqs[-1]), 10000**-0.5 / 4, delta=1e-9)

    def test_norms(self):
        x = torch.tensor([[3.0, -1.0, 2.0, 0.0]], dtype=F64)
        w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
        rms = math.sqrt((9 + 1 + 4) / 4 + 1e-6)
        self.assertTrue(torch.allclose(tr.rms_norm(x, w, 1e-6), w * x / rms, rtol=1e-15))
        b = torch.tensor([0.5, 0.0, 0.0, -0.5], dtype=F64)
        std = math.sqrt(((3 - 1)**2 + 4 + 1 + 1) / 4 + 1e-6)
        self.assertTrue(torch.allclose(tr.layer_norm(x, w, b), w * (x - 1) / std + b, rtol=1e-15))

    def test_top_keys_ties_to_the_lower_position(self):
        inf = math.inf
        scores = torch.tensor([[0.0, -inf, -inf, -inf, -inf], [0.0, 0.0, -inf, -inf, -inf],
                               [0.0, 0.0, 0.0, -inf, -inf], [0.0, 5.0, 0.0, 1.0, -inf],
                               [2.0, 0.0, 2.0, 2.0, 0.0]],
                              dtype=F64)
        selected, positions = tr.select_top_keys(scores, 3)
        self.assertEqual(positions.tolist(),
                         [[0, -1, -1], [0, 1, -1], [0, 1, 2], [0, 1, 3], [0, 2, 3]])
        self.assertEqual(int(selected.sum()), 12)

    def test_route_ties_and_groups(self):
        cfg = small_config()  # 4 experts, 2 groups, 1 kept group, 2 experts a token
        # Exact binary fractions: rows 0 and 2 tie between the groups (sums 1 and 0.5).
        scores = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.125, 0.25, 0.875, 0.0],
                               [0.25, 0.25, 0.125, 0.375]],
                              dtype=F64)
        selected, margin = tr.route(cfg, scores, torch.zeros(4, dtype=F64))
        self.assertEqual(selected.tolist(), [[True, True, False, False], [False, False, True, True],
                                             [True, True, False, False]])
        self.assertEqual(margin.tolist(), [0.0, 0.5, 0.0])
        # Without a router bias, groups rank by their best score (row 2: 0.375 > 0.25).
        selected, _ = tr.route(cfg, scores, None)
        self.assertEqual(selected[2].tolist(), [False, False, True, True])
        # The bias moves the choice.
        bias = torch.tensor([0.0, 0.0, 0.25, 0.0], dtype=F64)
        selected, _ = tr.route(cfg, scores, bias)
        self.assertEqual(selected[2].tolist(), [False, False, True, True])

    def test_kl_and_lm_against_torch(self):
        torch.manual_seed(1)
        t = 7
        rec = tr.LayerRecord()
        rec.selected = tr.causal_mask(t) & (torch.rand(t, t) < 0.5) | torch.eye(t, dtype=bool)
        rec.index_scores = torch.randn(t, t, dtype=F64).masked_fill(~tr.causal_mask(t), -math.inf)
        for stage, keys in (("warmup", tr.causal_mask(t)), ("sparse", rec.selected)):
            rec.probs = torch.softmax(
                torch.randn(t, 3, t, dtype=F64).masked_fill(~keys.unsqueeze(1), -math.inf), -1)
            kl = tr.indexer_row_kl(rec, stage)
            for row in range(t):
                k = keys[row]
                p = rec.probs[row].mean(0)[k]
                log_q = torch.log_softmax(rec.index_scores[row][k], -1)
                want = torch.nn.functional.kl_div(log_q, p, reduction="sum")
                self.assertAlmostEqual(float(kl[row]), float(want), delta=1e-14)
        logits = torch.randn(t, 11, dtype=F64)
        tokens = torch.randint(0, 11, (t,))
        want = torch.nn.functional.cross_entropy(logits[:-1], tokens[1:])
        self.assertAlmostEqual(float(tr.token_losses(logits, tokens).mean()), float(want),
                               delta=1e-14)

    def test_balance_loss_by_hand(self):
        cfg = small_config()  # E = 4, k = 2
        rec = tr.LayerRecord()
        rec.router_scores = torch.tensor([[0.2, 0.4, 0.3, 0.1], [0.5, 0.5, 0.5, 0.5]], dtype=F64)
        rec.routed = torch.tensor([[True, True, False, False], [False, False, True, True]])
        f = [4 / (2 * 2) * 1] * 4  # every expert chosen once in 2 tokens
        share = [(0.2 + 0.25) / 2, (0.4 + 0.25) / 2, (0.3 + 0.25) / 2, (0.1 + 0.25) / 2]
        want = 0.1 * sum(a * b for a, b in zip(f, share))
        self.assertAlmostEqual(float(tr.balance_loss(cfg, [rec], 0.1)), want, delta=1e-15)


class OptimizerTest(unittest.TestCase):

    def test_adamw_matches_torch(self):
        gen = torch.Generator().manual_seed(3)
        shapes = {"a.weight": (5, 7), "b.weight": (3, 4), "norm.weight": (7,), "bias": (3,)}
        start = {n: torch.randn(*s, dtype=F64, generator=gen) for n, s in shapes.items()}
        grads = [{n: torch.randn(*s, dtype=F64, generator=gen) for n, s in shapes.items()}
                 for _ in range(6)]
        hp = goldens.ADAMW
        mine = dict(start)
        opt = tr.AdamW(mine, (hp["beta1"], hp["beta2"]), hp["eps"], hp["weight_decay"])
        theirs = {n: t.clone().requires_grad_(True) for n, t in start.items()}
        groups = [{"params": [theirs[n] for n in sorted(theirs) if theirs[n].dim() == 2],
                   "weight_decay": hp["weight_decay"]},
                  {"params": [theirs[n] for n in sorted(theirs) if theirs[n].dim() != 2],
                   "weight_decay": 0.0}]
        torch_opt = torch.optim.AdamW(groups, lr=1.0, betas=(hp["beta1"], hp["beta2"]),
                                      eps=hp["eps"])
        for step, g in enumerate(grads):
            lr = tr.learning_rate(step, len(grads), hp["lr"], hp["min_lr"], hp["warmup"])
            mine = opt.step(mine, g, lr)
            for group in torch_opt.param_groups:
                group["lr"] = lr
            for n in theirs:
                theirs[n].grad = g[n].clone()
            torch_opt.step()
        for n in start:
            self.assertFalse(torch.equal(mine[n], start[n]))
            diff = float((mine[n] - theirs[n].detach()).abs().max())
            self.assertLess(diff, 1e-14, n)  # a few ulps of float64 rounding order

    def test_schedule(self):
        lrs = [tr.learning_rate(i, 10, 3e-3, 3e-4, 2) for i in range(10)]
        self.assertEqual(lrs[:3], [1.5e-3, 3e-3, 3e-3])
        self.assertEqual(lrs[9], 3e-4)
        mid = 3e-4 + 0.5 * (3e-3 - 3e-4) * (1 + math.cos(math.pi * 3 / 7))
        self.assertAlmostEqual(lrs[5], mid, delta=1e-18)
        self.assertTrue(all(a > b for a, b in zip(lrs[2:], lrs[3:])))

    def test_clipping(self):
        grads = {"a": torch.tensor([3.0, 4.0], dtype=F64), "b": torch.tensor([12.0], dtype=F64)}
        self.assertEqual(tr.clip_gradients(grads, 1.0), 13.0)
        self.assertEqual(grads["b"].tolist(), [12.0 * (1.0 / (13.0 + 1e-6))])
        small = {"a": torch.tensor([0.3, 0.4], dtype=F64)}
        self.assertAlmostEqual(tr.clip_gradients(small, 1.0), 0.5, delta=1e-16)
        self.assertEqual(small["a"].tolist(), [0.3, 0.4])

    def test_router_bias_update(self):
        buffers = {"b": torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=F64)}
        tr.update_router_biases(buffers, {"b": torch.tensor([10.0, 2.0, 4.0, 0.0], dtype=F64)},
                                1e-3)
        self.assertEqual(buffers["b"].tolist(), [0.5 - 1e-3, 1e-3, 0.0, 1e-3])  # mean 4


@unittest.skipUnless(os.access(DSA, os.X_OK), "needs build/release/dsa to make the checkpoint")
class MicroModelTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.work = tempfile.TemporaryDirectory(prefix="dsa_train_self_test_")
        cls.folder = os.path.join(cls.work.name, "micro")
        goldens.build_checkpoint(DSA, cls.folder)
        cls.cfg = tr.load_config(cls.folder)
        cls.params, cls.buffers = tr.load_parameters(cls.folder, cls.cfg)
        cls.tokens = goldens.golden_batch(cls.cfg.vocab, 1)[0]

    @classmethod
    def tearDownClass(cls):
        cls.work.cleanup()

    def run_model(self, tokens, attention, cfg=None):
        leaves = tr.trainable(self.params)
        logits, records = tr.forward(cfg or self.cfg, leaves, self.buffers, tokens, attention)
        return leaves, tr.token_losses(logits, tokens), records

    def test_parameters(self):
        self.assertEqual(sum(t.numel() for t in self.params.values()), 169600)
        self.assertEqual(list(self.buffers), ["model.layers.1.mlp.gate.e_score_correction_bias"])
        for name, value in self.params.items():
            self.assertTrue(torch.equal(inference.bf16(value), value), name)

    def test_fp8_checkpoint_loads_bf16_rounded_weights(self):
        """FP8 weights load as bf16(code x block scale); MTP layers and scales are not parameters.
        (The micro shape cannot be FP8: init-model needs hidden % 128 == 0; tiny is used.)"""
        folder = os.path.join(self.work.name, "tiny_fp8")
        subprocess.run([DSA, "init-model", "--preset", "tiny", "--dtype", "fp8", "-o", folder,
                        "--force"], check=True, stdout=subprocess.DEVNULL)
        cfg = tr.load_config(folder)
        params, buffers = tr.load_parameters(folder, cfg)
        raw, dtypes = read_checkpoint(folder)
        self.assertTrue(any(tr.layer_of(n) == cfg.layers for n in raw))  # tiny has an MTP layer
        self.assertTrue(all(tr.layer_of(n) is None or tr.layer_of(n) < cfg.layers for n in params))
        self.assertFalse(any(n.endswith("_scale_inv") for n in params))
        self.assertEqual(set(params) | set(buffers),
                         {n for n in raw if not n.endswith("_scale_inv") and
                          (tr.layer_of(n) is None or tr.layer_of(n) < cfg.layers)})
        name = "model.layers.1.self_attn.kv_b_proj.weight"
        self.assertEqual(dtypes[name], "F8_E4M3")
        codes, scale = raw[name], raw[name + "_scale_inv"]
        for i, j in ((0, 0), (5, 100), (130, 127), (255, 64)):
            value = float(fp8.DECODE[int(codes[i, j])]) * float(scale[i // 128, j // 128])
            want = float(torch.tensor(value, dtype=torch.float32).to(torch.bfloat16))
            self.assertEqual(float(params[name][i, j]), want, (i, j))
        for n, value in params.items():
            self.assertTrue(torch.equal(inference.bf16(value), value), n)

    def test_directional_derivatives(self):
        """Central differences of each loss along a random direction in one parameter tensor at a
        time, against autograd's gradient of that tensor.

        Step h = 1e-6 times a direction scaled to the tensor's mean |value| (1 for a zero
        tensor). Error budget: truncation h^2/6 |L'''| ~ 1e-12; rounding: each float64 evaluation
        of a loss |L| < 8 is off by a few eps64 |L| ~ 2e-15, over 2h: ~2e-9. Tolerance
        1e-6 |analytic| + 3e-9. The discrete choices do not move: their margins (>= 5e-4, see the
        goldens' metadata) are far above the perturbation of the scores (~1e-6).
        """
        gen = torch.Generator().manual_seed(11)
        indexer = [n for n in sorted(self.params) if ".indexer." in n]
        everything = sorted(self.params)
        # (label, attention, loss, tensors to move, does the loss depend on tensor n?)
        lm_reaches = lambda n: ".indexer." not in n
        balance_reaches = lambda n: lm_reaches(n) and not any(
            part in n for part in ("experts.", "model.norm.", "lm_head."))  # only upstream of s
        cases = [
            ("dense lm", "dense", lambda lo, r: lo.mean(), everything, lm_reaches),
            ("sparse lm", "sparse", lambda lo, r: lo.mean(), everything, lm_reaches),
            ("warmup indexer", "dense", lambda lo, r: tr.indexer_loss(r, "warmup"), indexer,
             lambda n: True),
            ("sparse indexer", "sparse", lambda lo, r: tr.indexer_loss(r, "sparse"), indexer,
             lambda n: True),
            ("balance", "dense", lambda lo, r: tr.balance_loss(self.cfg, r, 1.0), everything,
             balance_reaches),
        ]
        h = 1e-6
        for label, attention, loss_of, moved, reaches in cases:
            leaves, losses, records = self.run_model(self.tokens, attention)
            grads = tr.gradients(loss_of(losses, records), leaves)
            for name in moved:
                value = self.params[name]
                scale = float(value.abs().mean()) or 1.0
                direction = torch.randn(value.shape, dtype=F64, generator=gen) * scale

                def loss_at(sign):
                    params = dict(self.params)
                    params[name] = value + sign * h * direction
                    logits, recs = tr.forward(self.cfg, params, self.buffers, self.tokens,
                                              attention)
                    return float(loss_of(tr.token_losses(logits, self.tokens), recs))

                analytic = float((grads[name] * direction).sum())
                numeric = (loss_at(1) - loss_at(-1)) / (2 * h)
                self.assertLess(abs(numeric - analytic), 1e-6 * abs(analytic) + 3e-9,
                                (label, name, analytic, numeric))
                # A check that cannot fail is no check: non-zero exactly where the loss reaches.
                self.assertEqual(abs(analytic) > 1e-6, reaches(name), (label, name, analytic))

    def test_gradients_reach_only_their_parameters(self):
        for attention in ("dense", "sparse"):
            leaves, losses, records = self.run_model(self.tokens, attention)
            lm = tr.gradients(losses.mean(), leaves, retain_graph=True)
            for stage in ("warmup", "sparse"):
                ix = tr.gradients(tr.indexer_loss(records, stage), leaves, retain_graph=True)
                for n in leaves:
                    is_indexer = ".indexer." in n
                    self.assertEqual(bool(lm[n].any()), not is_indexer, (attention, n))
                    self.assertEqual(bool(ix[n].any()), is_indexer, (attention, stage, n))

    def test_indexer_kl_gradient_is_q_minus_p(self):
        for attention, stage in (("dense", "warmup"), ("sparse", "sparse")):
            _, _, records = self.run_model(self.tokens, attention)
            for rec in records:
                scores = rec.index_scores.detach().clone().requires_grad_(True)
                rec.index_scores = scores
                keys = tr.causal_mask(scores.shape[0]) if stage == "warmup" else rec.selected
                (grad,) = torch.autograd.grad(tr.indexer_row_kl(rec, stage).sum(), scores)
                q = torch.softmax(scores.detach().masked_fill(~keys, -math.inf), -1)
                p = rec.probs.detach().mean(1)
                self.assertTrue(torch.all(p[~keys] == 0))
                self.assertLess(float((grad - (q - p)).abs().max()), 1e-15)

    def test_causality(self):
        """Changing token j leaves the losses of positions t < j-1 (which neither see token j
        nor predict it) and their gradients unchanged, bit for bit; later ones change."""
        j = 13
        changed = self.tokens.clone()
        changed[j] = (changed[j] + 1) % self.cfg.vocab
        for attention in ("dense", "sparse"):
            results = []
            for tokens in (self.tokens, changed):
                leaves, losses, records = self.run_model(tokens, attention)
                grads = tr.gradients(losses[:j - 1].sum(), leaves)
                kl = torch.stack([tr.indexer_row_kl(r, "warmup") for r in records])
                results.append((losses.detach(), grads, kl.detach()))
            (a, ga, ka), (b, gb, kb) = results
            self.assertTrue(torch.equal(a[:j - 1], b[:j - 1]), attention)
            self.assertTrue(bool((a[j - 1:] != b[j - 1:]).all()), attention)
            self.assertTrue(torch.equal(ka[:, :j], kb[:, :j]), attention)
            self.assertTrue(bool((ka[:, j + 1:] != kb[:, j + 1:]).any()), attention)
            for n in ga:
                self.assertTrue(torch.equal(ga[n], gb[n]), (attention, n))

    def test_sparse_equals_dense_when_topk_covers_the_sequence(self):
        wide = tr.load_config(self.folder, {"index_topk": 64})
        _, dense, dense_records = self.run_model(self.tokens, "dense")
        leaves, sparse, _ = self.run_model(self.tokens, "sparse", wide)
        self.assertTrue(torch.equal(dense, sparse))
        leaves_d, dense2, _ = self.run_model(self.tokens, "dense")
        gd = tr.gradients(dense2.mean(), leaves_d)
        gs = tr.gradients(sparse.mean(), leaves)
        for n in gd:
            self.assertTrue(torch.equal(gd[n], gs[n]), n)
        # With index_topk 8 rows 8.. really select, and the loss differs.
        _, narrow, _ = self.run_model(self.tokens, "sparse")
        self.assertTrue(torch.equal(dense[:7], narrow[:7]))
        self.assertFalse(torch.equal(dense, narrow))

    def test_training_reduces_the_loss(self):
        path = os.path.join(goldens.GOLDENS, "micro_adamw.safetensors")
        tensors, _, meta = read_file(path)
        losses = tensors["losses"]
        self.assertLess(float(losses[-1]), 0.25 * float(losses[0]))
        self.assertGreater(float(tensors["grad_norms"][0]), float(meta["clip"]))  # clipping ran
        bias = tensors["final.model.layers.1.mlp.gate.e_score_correction_bias"]
        self.assertTrue(bool(bias.any()))

    def test_an_fp32_run_lands_close_to_the_goldens(self):
        """This reference run on float32 copies of the parameters (torch's fp32 CPU kernels)
        against the float64 goldens: what an fp32 engine should expect.

        The discrete choices must agree (top-k sets, expert counts). Values: fp32 unit roundoff
        6e-8, grown over ~20 dependent operations and reductions of length <= 256 to ~1e-6
        (measured: <= 9e-7 norm-relative per gradient tensor, <= 5e-7 after 10 AdamW steps).
        Tolerance 1e-5 norm-relative per tensor and per loss.
        """
        p32 = {n: t.float() for n, t in self.params.items()}
        b32 = {n: t.float() for n, t in self.buffers.items()}

        def close(got, want, what):
            got, want = got.detach().double(), want.double()
            self.assertLessEqual(float((got - want).norm()), 1e-5 * float(want.norm()), what)

        cases = {
            "micro_dense_lm": ("dense", lambda lo, r: lo.mean()),
            "micro_sparse_lm": ("sparse", lambda lo, r: lo.mean()),
            "micro_indexer": ("dense", lambda lo, r: tr.indexer_loss(r, "warmup")),
            "micro_sparse_indexer": ("sparse", lambda lo, r: tr.indexer_loss(r, "sparse")),
            "micro_balance": ("dense", lambda lo, r: lo.mean() + tr.balance_loss(self.cfg, r, 1.0)),
        }
        for case, (attention, loss_of) in cases.items():
            want, _, meta = read_file(os.path.join(goldens.GOLDENS, f"{case}.safetensors"))
            leaves = tr.trainable(p32)
            logits, records = tr.forward(self.cfg, leaves, b32, self.tokens, attention)
            loss = loss_of(tr.token_losses(logits, self.tokens), records)
            self.assertEqual(loss.dtype, torch.float32)
            close(loss, torch.tensor(float(meta["loss"])), case)
            names = [n[len("grad."):] for n in want if n.startswith("grad.")]
            for n, g in tr.gradients(loss, leaves, names).items():
                close(g, want[f"grad.{n}"], (case, n))
            for layer, rec in enumerate(records):
                if f"layers.{layer}.indexer.topk" in want:
                    self.assertTrue(torch.equal(rec.topk, want[f"layers.{layer}.indexer.topk"]))
        want, _, _ = read_file(os.path.join(goldens.GOLDENS, "micro_adamw.safetensors"))
        batch = goldens.golden_batch(self.cfg.vocab, 2)
        final, final_buffers, history = tr.train(self.cfg, p32, b32, batch, goldens.ADAMW)
        close(torch.tensor(history["loss"]), want["losses"], "losses")
        close(torch.tensor(history["grad_norm"]), want["grad_norms"], "grad_norms")
        counts = torch.stack([c for step in history["counts"] for c in step.values()])
        self.assertTrue(torch.equal(counts.to(torch.int32), want["layers.1.expert_counts"]))
        everything = {**final, **final_buffers}
        for n in goldens.ADAMW_FINAL:
            self.assertEqual(everything[n].dtype, torch.float32)
            close(everything[n], want[f"final.{n}"], n)

    def test_committed_goldens_are_reproducible(self):
        with tempfile.TemporaryDirectory(prefix="dsa_train_goldens_check_") as out:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "make_train_goldens.py")
            subprocess.run([sys.executable, script, "--dsa", DSA, "--out", out], check=True,
                           stderr=subprocess.DEVNULL)
            for case in goldens.CASES:
                name = f"{case}.safetensors"
                with open(os.path.join(out, name), "rb") as f:
                    fresh = f.read()
                with open(os.path.join(goldens.GOLDENS, name), "rb") as f:
                    committed = f.read()
                self.assertEqual(fresh, committed, name)


if __name__ == "__main__":
    unittest.main()

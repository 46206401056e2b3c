// Causal MHA for training (ops/attention/mha_train.h), dense and sparse: the references against a
// direct formula and central finite differences in double, the fast version against the fp32
// reference (threads 1, 2, 3, every SIMD target), determinism, causality and bad parameters.
//
// Tolerance of fp32 against exact arithmetic, u = 2^-24. A sum of n products carries at most
// n·u times the sum of their absolute values, whatever the order, so with the magnitudes computed
// exactly below (M = the same sum over absolute values):
//   score   |δS| <= σ = Dqk·u·max scale·Σ|q||k|   (largest over the pairs that attend)
//   lse     |δ|  <= σ + (T + 2)·u + u·|lse|       (a sum of <= T exps of 1 ulp each, log, add)
//   P = exp(S - lse): relative ρ = 2σ + (T + 4 + max|S| + max|lse|)·u   (S - lse is rounded)
//   out, dv      <= (ρ + (T + 1)·u)·M_out, M_dv             M_out = Σ_s P|v|, M_dv = Σ_t P|dout|
//   dS           <= (2ρ + (2 Dv + T + 2)·u)·B    B = P (Σ|dout||v| + Σ|dout| M_out)  (dP and Δ)
//   dq, dk       <= (2ρ + (2 Dv + 2 T + 3)·u)·M   M_dq = scale Σ_s B|k|, M_dk = scale Σ_t B|q|
// One factor ε = 2ρ + (2 Dv + 2 T + 8)·u covers every output of one implementation; two
// implementations differ by at most 2ε·M, and an lse by 2ρ. The same bound with u = 2^-53 holds
// for the double reference against the exact values (themselves computed in double: 2ε again).
// These are worst-case bounds (2ε ~ 6e-4 at T = 300; the errors seen are ~2e-6); a wrong
// key, scale or term moves an output by ~1e-2 of its magnitude or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/attention/mha_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kU32 = 0x1p-24;
constexpr double kU64 = 0x1p-53;

struct Case {
  int64_t T, H, Dqk, Dv;
  std::vector<int32_t> indices = {};  // [T, topk]; empty: dense
  int64_t topk = 0;
};

// Row t lists a random subset of 0..t: min(topk, t + 1) keys, fewer in about a third of the rows,
// none in `empty_row`, at random slots with -1 in the others.
std::vector<int32_t> random_indices(int64_t T, int64_t topk, uint32_t seed, int64_t empty_row) {
  std::mt19937 rng(seed);
  std::vector<int32_t> indices(size_t(T * topk), -1);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> keys(static_cast<size_t>(t + 1)), slots(static_cast<size_t>(topk));
    for (int32_t s = 0; s <= t; ++s) keys[s] = s;
    for (int32_t i = 0; i < topk; ++i) slots[i] = i;
    std::shuffle(keys.begin(), keys.end(), rng);
    std::shuffle(slots.begin(), slots.end(), rng);
    int64_t n = std::min<int64_t>(topk, t + 1);
    if (rng() % 3 == 0) n = 1 + int64_t(rng() % uint32_t(n));
    if (t == empty_row) n = 0;
    for (int64_t i = 0; i < n; ++i) indices[t * topk + slots[i]] = keys[i];
  }
  return indices;
}

Case sparse_case(int64_t T, int64_t H, int64_t Dqk, int64_t Dv, int64_t topk, uint32_t seed) {
  return {T, H, Dqk, Dv, random_indices(T, topk, seed, T / 3), topk};
}

struct Inputs {
  std::vector<float> q, k, v, dout;
  double scale;
};

Inputs random_inputs(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto fill = [&](int64_t n, float stddev) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& e : x) e = stddev * normal(rng);
    return x;
  };
  Inputs in;
  in.q = fill(c.T * c.H * c.Dqk, 1.5f);  // scores ~ N(0, 2): some rows peaked, some flat
  in.k = fill(c.T * c.H * c.Dqk, 1.0f);
  in.v = fill(c.T * c.H * c.Dv, 1.0f);
  in.dout = fill(c.T * c.H * c.Dv, 1.0f);
  in.scale = double(float(1.0 / std::sqrt(double(c.Dqk))));  // representable in fp32
  return in;
}

// Inputs and outputs of one run in Real. Outputs start as NaN, so an element left unwritten
// shows (dq, dk, dv are overwritten, not accumulated).
template <typename Real>
struct Buffers {
  std::vector<Real> q, k, v, dout, out, lse, dq, dk, dv;
  MhaTrain<Real> p;

  Buffers(const Case& c, const Inputs& in)
      : q(in.q.begin(), in.q.end()),
        k(in.k.begin(), in.k.end()),
        v(in.v.begin(), in.v.end()),
        dout(in.dout.begin(), in.dout.end()) {
    const Real nan = std::numeric_limits<Real>::quiet_NaN();
    out.assign(v.size(), nan);
    lse.assign(size_t(c.T * c.H), nan);
    dq.assign(q.size(), nan);
    dk.assign(k.size(), nan);
    dv.assign(v.size(), nan);
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    if (!c.indices.empty()) {
      p.indices = c.indices.data();
      p.topk = c.topk;
    }
    p.out = out.data();
    p.lse = lse.data();
    p.dout = dout.data();
    p.dq = dq.data();
    p.dk = dk.data();
    p.dv = dv.data();
    p.tokens = c.T;
    p.heads = c.H;
    p.qk_dim = c.Dqk;
    p.v_dim = c.Dv;
    p.scale = Real(in.scale);
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
};

template <typename Real>
void run_reference(Buffers<Real>& b) {
  mha_train_forward_reference(b.p);
  mha_backward_reference(b.p);
}

void run_fast(Buffers<float>& b, ThreadPool& pool) {
  mha_train_forward(b.p, pool);
  mha_backward(b.p, pool);
}

// Attention written out directly in double, with the magnitudes of the tolerance (see the top).
struct Exact {
  std::vector<double> out, lse, dq, dk, dv;
  std::vector<double> m_out, m_dq, m_dk, m_dv;
  double score_terms = 0;  // max over attending pairs of Dqk · scale Σ|q||k| (σ = u · this)
  double max_score = 0, max_lse = 0;
  int64_t T = 0, Dv = 0;

  // ε for unit roundoff u (one implementation against exact arithmetic).
  double rho(double u) const { return 2 * u * score_terms + (T + 4 + max_score + max_lse) * u; }
  double eps(double u) const { return 2 * rho(u) + double(2 * Dv + 2 * T + 8) * u; }
};

Exact exact_attention(const Case& c, const Inputs& in) {
  const int64_t T = c.T, H = c.H, Dqk = c.Dqk, Dv = c.Dv;
  Exact e;
  e.T = T;
  e.Dv = Dv;
  e.out.assign(size_t(T * H * Dv), 0.0);
  e.m_out = e.dv = e.m_dv = e.out;
  e.dq.assign(size_t(T * H * Dqk), 0.0);
  e.m_dq = e.dk = e.m_dk = e.dq;
  e.lse.assign(size_t(T * H), std::numeric_limits<double>::infinity());
  const auto sees = [&](int64_t t, int64_t s) {
    if (s > t) return false;
    if (c.indices.empty()) return true;
    const auto row = c.indices.begin() + t * c.topk;
    return std::find(row, row + c.topk, int32_t(s)) != row + c.topk;
  };
  const auto qk = [&](const std::vector<float>& x, int64_t t, int64_t h) {
    return x.data() + (t * H + h) * Dqk;
  };
  const auto vv = [&](const std::vector<float>& x, int64_t t, int64_t h) {
    return x.data() + (t * H + h) * Dv;
  };
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> P(size_t(T * T), 0.0), dS(P.size(), 0.0), B(P.size(), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> S(size_t(T), 0.0);
      double max = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s <= t; ++s) {
        if (!sees(t, s)) continue;
        double dot = 0, abs_dot = 0;
        for (int64_t i = 0; i < Dqk; ++i) {
          dot += double(qk(in.q, t, h)[i]) * qk(in.k, s, h)[i];
          abs_dot += std::fabs(double(qk(in.q, t, h)[i]) * qk(in.k, s, h)[i]);
        }
        S[s] = in.scale * dot;
        max = std::max(max, S[s]);
        e.max_score = std::max(e.max_score, std::fabs(S[s]));
        e.score_terms = std::max(e.score_terms, double(Dqk) * in.scale * abs_dot);
      }
      if (max == -std::numeric_limits<double>::infinity()) continue;  // no key: all zero
      double sum = 0;
      for (int64_t s = 0; s <= t; ++s) {
        if (sees(t, s)) sum += std::exp(S[s] - max);
      }
      const double lse = max + std::log(sum);
      e.lse[t * H + h] = lse;
      e.max_lse = std::max(e.max_lse, std::fabs(lse));
      const size_t o = size_t((t * H + h) * Dv);
      for (int64_t s = 0; s <= t; ++s) {
        if (!sees(t, s)) continue;
        P[t * T + s] = std::exp(S[s] - lse);
        for (int64_t i = 0; i < Dv; ++i) {
          e.out[o + i] += P[t * T + s] * vv(in.v, s, h)[i];
          e.m_out[o + i] += P[t * T + s] * std::fabs(vv(in.v, s, h)[i]);
        }
      }
      double delta = 0, abs_delta = 0;
      for (int64_t i = 0; i < Dv; ++i) {
        delta += vv(in.dout, t, h)[i] * e.out[o + i];
        abs_delta += std::fabs(vv(in.dout, t, h)[i]) * e.m_out[o + i];
      }
      for (int64_t s = 0; s <= t; ++s) {
        if (!sees(t, s)) continue;
        double dp = 0, abs_dp = 0;
        for (int64_t i = 0; i < Dv; ++i) {
          dp += double(vv(in.dout, t, h)[i]) * vv(in.v, s, h)[i];
          abs_dp += std::fabs(double(vv(in.dout, t, h)[i]) * vv(in.v, s, h)[i]);
        }
        dS[t * T + s] = P[t * T + s] * (dp - delta);
        B[t * T + s] = P[t * T + s] * (abs_dp + abs_delta);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t s = 0; s <= t; ++s) {
        const size_t ts = size_t(t * T + s);
        const size_t qt = size_t((t * H + h) * Dqk), ks = size_t((s * H + h) * Dqk);
        for (int64_t i = 0; i < Dqk; ++i) {
          e.dq[qt + i] += in.scale * dS[ts] * in.k[ks + i];
          e.m_dq[qt + i] += in.scale * B[ts] * std::fabs(in.k[ks + i]);
          e.dk[ks + i] += in.scale * dS[ts] * in.q[qt + i];
          e.m_dk[ks + i] += in.scale * B[ts] * std::fabs(in.q[qt + i]);
        }
        const size_t vt = size_t((t * H + h) * Dv), vs = size_t((s * H + h) * Dv);
        for (int64_t i = 0; i < Dv; ++i) {
          e.dv[vs + i] += P[ts] * in.dout[vt + i];
          e.m_dv[vs + i] += P[ts] * std::fabs(in.dout[vt + i]);
        }
      }
    }
  }
  return e;
}

// |got - want| <= eps · magnitude for every element; reports the first failure only.
template <typename A, typename B>
void expect_close(const std::vector<A>& got, const std::vector<B>& want,
                  const std::vector<double>& magnitude, double eps, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double error = std::fabs(double(got[i]) - double(want[i]));
    if (!(error <= eps * magnitude[i] + 1e-30)) {
      ADD_FAILURE() << what << " element " << i << ": " << double(got[i]) << " vs "
                    << double(want[i]) << ", error " << error << " > " << eps << " * "
                    << magnitude[i];
      return;
    }
  }
}

// lse: infinite (no key) exactly where `want` is, otherwise within `tolerance`.
template <typename A, typename B>
void expect_lse_close(const std::vector<A>& got, const std::vector<B>& want, double tolerance,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(double(want[i]))) {
      ASSERT_TRUE(std::isinf(double(got[i])) && got[i] > 0) << what << " row " << i;
      continue;
    }
    ASSERT_LE(std::fabs(double(got[i]) - double(want[i])), tolerance) << what << " row " << i;
  }
}

// Every output of `got` within 2ε (two fp32 implementations) of `want`.
template <typename A, typename B>
void expect_outputs_close(const Buffers<A>& got, const Buffers<B>& want, const Exact& e, double u,
                          const std::string& what) {
  const double eps = 2 * e.eps(u);
  expect_lse_close(got.lse, want.lse, 2 * e.rho(u), what + " lse");
  expect_close(got.out, want.out, e.m_out, eps, what + " out");
  expect_close(got.dq, want.dq, e.m_dq, eps, what + " dq");
  expect_close(got.dk, want.dk, e.m_dk, eps, what + " dk");
  expect_close(got.dv, want.dv, e.m_dv, eps, what + " dv");
}

template <typename A>
void expect_outputs_equal(const Buffers<A>& a, const Buffers<A>& b, const std::string& what) {
  const auto same_bits = [](const std::vector<A>& x, const std::vector<A>& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(A)) == 0;
  };
  EXPECT_TRUE(same_bits(a.out, b.out)) << what << " out";
  EXPECT_TRUE(same_bits(a.lse, b.lse)) << what << " lse";
  EXPECT_TRUE(same_bits(a.dq, b.dq)) << what << " dq";
  EXPECT_TRUE(same_bits(a.dk, b.dk)) << what << " dk";
  EXPECT_TRUE(same_bits(a.dv, b.dv)) << what << " dv";
}

std::string describe(const Case& c) {
  return "T " + std::to_string(c.T) + " H " + std::to_string(c.H) + " Dqk " +
         std::to_string(c.Dqk) + " Dv " + std::to_string(c.Dv) +
         (c.indices.empty() ? " dense" : " sparse topk " + std::to_string(c.topk));
}

// ---------------------------------------------------------------------------------------------
// References

TEST(MhaTrainReference, MatchesTheDirectFormula) {
  const Case cases[] = {{67, 3, 24, 16}, sparse_case(67, 3, 24, 16, 20, 7)};
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Inputs in = random_inputs(c, 1);
    const Exact e = exact_attention(c, in);
    Buffers<float> f(c, in);
    run_reference(f);
    // One fp32 implementation against exact arithmetic: ε and ρ (see the top).
    expect_lse_close(f.lse, e.lse, e.rho(kU32), "float lse");
    expect_close(f.out, e.out, e.m_out, e.eps(kU32), "float out");
    expect_close(f.dq, e.dq, e.m_dq, e.eps(kU32), "float dq");
    expect_close(f.dk, e.dk, e.m_dk, e.eps(kU32), "float dk");
    expect_close(f.dv, e.dv, e.m_dv, e.eps(kU32), "float dv");
    Buffers<double> d(c, in);
    run_reference(d);
    const double eps = 2 * e.eps(kU64);  // the exact values carry double rounding too
    expect_lse_close(d.lse, e.lse, 2 * e.rho(kU64), "double lse");
    expect_close(d.out, e.out, e.m_out, eps, "double out");
    expect_close(d.dq, e.dq, e.m_dq, eps, "double dq");
    expect_close(d.dk, e.dk, e.m_dk, eps, "double dk");
    expect_close(d.dv, e.dv, e.m_dv, eps, "double dv");
  }
}

TEST(MhaTrainReference, LseIsTheLogSumExpOfTheScores) {
  // Row 2 of head 1, written out: lse = log Σ_{s <= 2} exp(scale q·k).
  const Case c{5, 2, 7, 3};
  const Inputs in = random_inputs(c, 2);
  Buffers<double> d(c, in);
  mha_train_forward_reference(d.p);
  const int64_t t = 2, h = 1;
  double sum = 0;
  for (int64_t s = 0; s <= t; ++s) {
    double dot = 0;
    for (int64_t i = 0; i < c.Dqk; ++i) {
      dot += double(in.q[(t * c.H + h) * c.Dqk + i]) * in.k[(s * c.H + h) * c.Dqk + i];
    }
    sum += std::exp(in.scale * dot);
  }
  EXPECT_NEAR(d.lse[t * c.H + h], std::log(sum), 1e-14);  // a few double ulps of |lse| ~ 1
}

// Central differences of L = Σ dout · out(x) in double for every element of q, k and v. Step
// h = 1e-5: the truncation error h²/6 |L'''| is ~1e-10 for these O(1) values and the rounding
// error ~ n 2^-53 Σ|dout · out| / h <= 1e-9 (n <= 100 terms); tolerance 1e-6 (1 + |g|) leaves a
// wide margin, while a missing or wrong term moves a gradient by >= 1e-3.
void check_finite_differences(const Case& c) {
  SCOPED_TRACE(describe(c));
  const Inputs in = random_inputs(c, 3);
  Buffers<double> b(c, in);
  run_reference(b);
  const auto loss = [&]() {
    std::vector<double> out(b.out.size()), lse(b.lse.size());
    MhaTrain<double> p = b.p;
    p.out = out.data();
    p.lse = lse.data();
    mha_train_forward_reference(p);
    double sum = 0;
    for (size_t i = 0; i < out.size(); ++i) sum += b.dout[i] * out[i];
    return sum;
  };
  const auto check = [&](std::vector<double>& x, const std::vector<double>& grad,
                         const char* name) {
    for (size_t i = 0; i < x.size(); ++i) {
      const double saved = x[i], step = 1e-5;
      x[i] = saved + step;
      const double plus = loss();
      x[i] = saved - step;
      const double minus = loss();
      x[i] = saved;
      const double numeric = (plus - minus) / (2 * step);
      ASSERT_NEAR(grad[i], numeric, 1e-6 * (1 + std::fabs(numeric))) << name << " element " << i;
    }
  };
  check(b.q, b.dq, "dq");
  check(b.k, b.dk, "dk");
  check(b.v, b.dv, "dv");
}

TEST(MhaTrainReference, DenseGradientsMatchFiniteDifferences) {
  check_finite_differences({7, 2, 5, 3});
}

TEST(MhaTrainReference, SparseGradientsMatchFiniteDifferences) {
  // Rows 0..3, 6 and 8 list fewer keys than topk (-1 slots), row 4 none at all, 5 and 7 every
  // slot, in shuffled order; key 6 is listed by no row.
  const std::vector<int32_t> indices = {
      -1, 0,  -1, -1,  // t 0
      1,  -1, 0,  -1,  // t 1
      -1, 2,  -1, -1,  // t 2
      3,  -1, -1, 1,   // t 3
      -1, -1, -1, -1,  // t 4: no key
      5,  0,  2,  4,   // t 5
      -1, 5,  3,  -1,  // t 6
      7,  0,  5,  2,   // t 7
      8,  4,  -1, 1,   // t 8
  };
  check_finite_differences({9, 2, 5, 3, indices, 4});
}

TEST(MhaTrainReference, SparseWithEveryCausalKeyIsDense) {
  // Listing 0..t in order is dense attention term for term: bit-identical.
  const int64_t T = 37;
  Case sparse{T, 2, 19, 5, std::vector<int32_t>(size_t(T * T), -1), T};
  for (int64_t t = 0; t < T; ++t) {
    for (int32_t s = 0; s <= t; ++s) sparse.indices[t * T + s] = s;
  }
  const Case dense{T, 2, 19, 5};
  const Inputs in = random_inputs(dense, 4);
  Buffers<float> a(dense, in), b(sparse, in);
  run_reference(a);
  run_reference(b);
  expect_outputs_equal(a, b, "reference sparse vs dense");
}

// ---------------------------------------------------------------------------------------------
// Fast against the reference

void check_fast(const Case& c, uint32_t seed) {
  SCOPED_TRACE(describe(c));
  const Inputs in = random_inputs(c, seed);
  const Exact e = exact_attention(c, in);
  Buffers<float> ref(c, in);
  run_reference(ref);
  test::for_each_simd_target([&] {
    Buffers<float> first(c, in);
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      ThreadPool pool(threads);
      Buffers<float> fast(c, in), again(c, in);
      run_fast(fast, pool);
      expect_outputs_close(fast, ref, e, kU32, "fast vs reference");
      run_fast(again, pool);
      expect_outputs_equal(fast, again, "two runs");
      if (threads == 1) {
        run_fast(first, pool);
      } else {
        expect_outputs_equal(fast, first, "against 1 thread");  // no dependence on threads
      }
    }
  });
}

TEST(MhaTrainFast, DenseMatchesReference) {
  check_fast({67, 3, 24, 16}, 11);
  check_fast({37, 2, 19, 5}, 12);  // widths below one vector: scalar tails
  check_fast({1, 2, 8, 8}, 13);
}

TEST(MhaTrainFast, DenseLongSequenceMatchesReference) {
  check_fast({300, 2, 72, 40}, 14);  // 5 blocks, the last partial; 72 = 64 + 8 columns
}

TEST(MhaTrainFast, SparseMatchesReference) {
  check_fast(sparse_case(67, 3, 24, 16, 20, 21), 15);
  check_fast(sparse_case(37, 2, 19, 5, 50, 22), 16);  // topk beyond the sequence
  check_fast(sparse_case(1, 1, 8, 8, 3, 23), 17);     // the only row has no key
}

TEST(MhaTrainFast, SparseLongSequenceMatchesReference) {
  check_fast(sparse_case(300, 2, 72, 40, 64, 24), 18);
}

// The fast version computes a 64-row (or 64-key) block in tiles while its listed pairs fill at
// least 1/8 of the block's tile area and row by row (key by key) below that. The cases above fill
// their tiles; 4 keys per row over 300 positions fill ~1/60 of them.
TEST(MhaTrainFast, SparseFewKeysPerRowMatchesReference) {
  check_fast(sparse_case(300, 2, 72, 40, 4, 25), 19);
}

TEST(MhaTrainFast, SparseMixedBlocksMatchReference) {
  // Rows 0..63 list every causal key (tiles), later rows 3 random keys (row by row); the first
  // key block is listed densely (tiles), the last sparsely (key by key).
  const int64_t T = 300, topk = 64;
  std::vector<int32_t> indices(size_t(T * topk), -1);
  std::mt19937 rng(26);
  for (int64_t t = 0; t < T; ++t) {
    if (t < 64) {
      for (int32_t s = 0; s <= t; ++s) indices[t * topk + s] = s;
      continue;
    }
    std::vector<int32_t> keys(static_cast<size_t>(t + 1));
    std::iota(keys.begin(), keys.end(), 0);
    std::shuffle(keys.begin(), keys.end(), rng);
    for (int i = 0; i < 3; ++i) indices[t * topk + 5 * i + 1] = keys[i];
  }
  check_fast({T, 2, 72, 40, indices, topk}, 20);
}

TEST(MhaTrainFast, SparseWithEveryCausalKeyMatchesDense) {
  const int64_t T = 67;
  Case sparse{T, 3, 24, 16, std::vector<int32_t>(size_t(T * T), -1), T};
  std::mt19937 rng(5);
  for (int64_t t = 0; t < T; ++t) {  // every causal key, in shuffled slots
    std::vector<int32_t> slots(static_cast<size_t>(T));
    for (int32_t i = 0; i < T; ++i) slots[i] = i;
    std::shuffle(slots.begin(), slots.end(), rng);
    for (int32_t s = 0; s <= t; ++s) sparse.indices[t * T + slots[s]] = s;
  }
  const Case dense{T, 3, 24, 16};
  const Inputs in = random_inputs(dense, 6);
  const Exact e = exact_attention(dense, in);
  ThreadPool pool(2);
  Buffers<float> a(dense, in), b(sparse, in);
  run_fast(a, pool);
  run_fast(b, pool);
  expect_outputs_close(b, a, e, kU32, "fast sparse vs fast dense");
}

TEST(MhaTrainFast, EmptyRowsAndUnlistedKeysGiveZeros) {
  // Row 2 lists nothing; key 3 is listed by no row.
  const Case c{5, 2, 6, 4, {0, -1, 1, 0, -1, -1, 2, -1, 4, 1}, 2};
  const Inputs in = random_inputs(c, 7);
  ThreadPool pool(2);
  Buffers<float> fast(c, in);
  run_fast(fast, pool);
  Buffers<double> ref(c, in);
  run_reference(ref);
  for (int64_t h = 0; h < c.H; ++h) {
    EXPECT_EQ(fast.lse[2 * c.H + h], std::numeric_limits<float>::infinity());
    EXPECT_EQ(ref.lse[2 * c.H + h], std::numeric_limits<double>::infinity());
    for (int64_t i = 0; i < c.Dv; ++i) {
      EXPECT_EQ(fast.out[(2 * c.H + h) * c.Dv + i], 0.0f);
      EXPECT_EQ(ref.out[(2 * c.H + h) * c.Dv + i], 0.0);
      EXPECT_EQ(fast.dv[(3 * c.H + h) * c.Dv + i], 0.0f);
      EXPECT_EQ(ref.dv[(3 * c.H + h) * c.Dv + i], 0.0);
    }
    for (int64_t i = 0; i < c.Dqk; ++i) {
      EXPECT_EQ(fast.dq[(2 * c.H + h) * c.Dqk + i], 0.0f);
      EXPECT_EQ(ref.dq[(2 * c.H + h) * c.Dqk + i], 0.0);
      EXPECT_EQ(fast.dk[(3 * c.H + h) * c.Dqk + i], 0.0f);
      EXPECT_EQ(ref.dk[(3 * c.H + h) * c.Dqk + i], 0.0);
    }
  }
}

TEST(MhaTrainFast, LaterKeysLeaveEarlierRowsBitIdentical) {
  // Changing k and v at position j may change rows >= j only. j = 37 sits inside the first
  // 64-key block, so rows 0..36 share the masked diagonal tile with it.
  const Case cases[] = {{67, 3, 24, 16}, sparse_case(67, 3, 24, 16, 20, 8)};
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Inputs in = random_inputs(c, 9);
    Inputs changed = in;
    const int64_t j = 37;
    for (int64_t i = 0; i < c.H * c.Dqk; ++i) changed.k[j * c.H * c.Dqk + i] += 3.0f;
    for (int64_t i = 0; i < c.H * c.Dv; ++i) changed.v[j * c.H * c.Dv + i] -= 2.0f;
    ThreadPool pool(3);
    Buffers<float> a(c, in), b(c, changed);
    mha_train_forward(a.p, pool);
    mha_train_forward(b.p, pool);
    const size_t before = size_t(j * c.H * c.Dv);
    EXPECT_TRUE(std::equal(a.out.begin(), a.out.begin() + before, b.out.begin()));
    EXPECT_TRUE(std::equal(a.lse.begin(), a.lse.begin() + j * c.H, b.lse.begin()));
    if (c.indices.empty()) {  // row j itself sees key j
      EXPECT_FALSE(std::equal(a.out.begin() + before, a.out.end(), b.out.begin() + before));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Bad parameters

void expect_error(const MhaTrainParams& p, const std::string& needle) {
  ThreadPool pool(1);
  for (int pass = 0; pass < 4; ++pass) {
    try {
      if (pass == 0) mha_train_forward(p, pool);
      if (pass == 1) mha_backward(p, pool);
      if (pass == 2) mha_train_forward_reference(p);
      if (pass == 3) mha_backward_reference(p);
      ADD_FAILURE() << "no error, expected one mentioning '" << needle << "' (pass " << pass << ")";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
          << error.what() << " (pass " << pass << ")";
    }
  }
}

TEST(MhaTrainValidate, BadParametersThrow) {
  const Case c{4, 2, 3, 2, {0, -1, 1, 0, 2, -1, 3, 1}, 2};
  const Inputs in = random_inputs(c, 10);
  Buffers<float> b(c, in);
  validate_backward(b.p);  // the baseline is fine
  const auto with = [&](auto change) {
    MhaTrainParams p = b.p;
    change(p);
    return p;
  };
  expect_error(with([](MhaTrainParams& p) { p.heads = 0; }), "heads");
  expect_error(with([](MhaTrainParams& p) { p.qk_dim = -1; }), "qk_dim");
  expect_error(with([](MhaTrainParams& p) { p.v_dim = 0; }), "v_dim");
  expect_error(with([](MhaTrainParams& p) { p.tokens = -1; }), "tokens");
  expect_error(with([](MhaTrainParams& p) { p.scale = 0; }), "scale");
  expect_error(with([](MhaTrainParams& p) { p.scale = std::nanf(""); }), "scale");
  expect_error(with([](MhaTrainParams& p) { p.q = nullptr; }), "q, k and v");
  expect_error(with([](MhaTrainParams& p) { p.topk = 0; }), "topk");
  expect_error(with([](MhaTrainParams& p) { p.indices = nullptr; }), "without indices");

  std::vector<int32_t> future = c.indices;
  future[2 * 2 + 1] = 3;  // row 2 lists key 3
  expect_error(with([&](MhaTrainParams& p) { p.indices = future.data(); }), "indices[2][1] = 3");
  std::vector<int32_t> duplicate = c.indices;
  duplicate[3 * 2 + 0] = 1;  // row 3 lists key 1 twice
  expect_error(with([&](MhaTrainParams& p) { p.indices = duplicate.data(); }),
               "indices[3][1] = 1 is listed twice");
  std::vector<int32_t> negative = c.indices;
  negative[1 * 2 + 1] = -2;
  expect_error(with([&](MhaTrainParams& p) { p.indices = negative.data(); }), "indices[1][1] = -2");
  std::vector<int32_t> beyond = c.indices;
  beyond[3 * 2 + 1] = 4;  // past the sequence
  expect_error(with([&](MhaTrainParams& p) { p.indices = beyond.data(); }), "indices[3][1] = 4");
}

TEST(MhaTrainValidate, MissingBuffersThrow) {
  const Case c{4, 2, 3, 2};
  const Inputs in = random_inputs(c, 11);
  Buffers<float> b(c, in);
  ThreadPool pool(1);
  MhaTrainParams p = b.p;
  p.lse = nullptr;
  EXPECT_THROW(mha_train_forward(p, pool), Error);
  EXPECT_THROW(mha_train_forward_reference(p), Error);
  EXPECT_THROW(mha_backward(p, pool), Error);
  p = b.p;
  p.dk = nullptr;
  EXPECT_NO_THROW(mha_train_forward(p, pool));
  EXPECT_THROW(mha_backward(p, pool), Error);
  EXPECT_THROW(mha_backward_reference(p), Error);
  p = b.p;
  p.dout = nullptr;
  EXPECT_THROW(mha_backward(p, pool), Error);
}

TEST(MhaTrainValidate, NoTokensIsANoOp) {
  MhaTrainParams p;
  p.heads = 2;
  p.qk_dim = 3;
  p.v_dim = 2;
  p.scale = 0.5f;
  ThreadPool pool(2);
  EXPECT_NO_THROW(mha_train_forward(p, pool));
  EXPECT_NO_THROW(mha_backward(p, pool));
  EXPECT_NO_THROW(mha_train_forward_reference(p));
  EXPECT_NO_THROW(mha_backward_reference(p));
}

}  // namespace
}  // namespace dsa

// Validation and the scalar references of causal MHA for training (see mha_train.h). The
// references follow the math line by line; they are templates so that finite-difference tests can
// run them in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/attention/mha_train.h"

namespace dsa {

template <typename Real>
void validate(const MhaTrain<Real>& p) {
  if (p.tokens < 0) fail("mha_train: tokens must be >= 0, got {}", p.tokens);
  if (p.heads <= 0) fail("mha_train: heads must be > 0, got {}", p.heads);
  if (p.qk_dim <= 0) fail("mha_train: qk_dim must be > 0, got {}", p.qk_dim);
  if (p.v_dim <= 0) fail("mha_train: v_dim must be > 0, got {}", p.v_dim);
  if (!(p.scale > 0) || !std::isfinite(double(p.scale))) {
    fail("mha_train: scale must be finite and > 0, got {}", double(p.scale));
  }
  if (p.tokens > std::numeric_limits<int32_t>::max()) {
    fail("mha_train: tokens must fit int32 indices, got {}", p.tokens);
  }
  if (p.indices && p.topk <= 0) fail("mha_train: indices given with topk {} (need > 0)", p.topk);
  if (!p.indices && p.topk != 0) fail("mha_train: topk {} given without indices", p.topk);
  if (p.tokens == 0) return;
  if (!p.q || !p.k || !p.v) fail("mha_train: q, k and v must be set");
  if (!p.indices) return;
  // last_row[s] = the last row that listed key s, to find duplicates in one pass.
  std::vector<int64_t> last_row(size_t(p.tokens), -1);
  for (int64_t t = 0; t < p.tokens; ++t) {
    for (int64_t slot = 0; slot < p.topk; ++slot) {
      const int64_t s = p.indices[t * p.topk + slot];
      if (s == -1) continue;
      if (s < 0 || s > t) {
        fail("mha_train: indices[{}][{}] = {}, expected -1 or a key in [0, {}] (causal)", t, slot,
             s, t);
      }
      if (last_row[s] == t) fail("mha_train: indices[{}][{}] = {} is listed twice", t, slot, s);
      last_row[s] = t;
    }
  }
}

template <typename Real>
void validate_forward(const MhaTrain<Real>& p) {
  validate(p);
  if (p.tokens > 0 && (!p.out || !p.lse)) fail("mha_train_forward: out and lse must be set");
}

template <typename Real>
void validate_backward(const MhaTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  if (!p.dout || !p.out || !p.lse) fail("mha_backward: dout, out and lse must be set");
  if (!p.dq || !p.dk || !p.dv) fail("mha_backward: dq, dk and dv must be set");
}

namespace {

// K_t: 0..t (dense), or the valid keys row t lists, in slot order.
template <typename Real>
std::vector<int64_t> keys_of_row(const MhaTrain<Real>& p, int64_t t) {
  std::vector<int64_t> keys;
  if (!p.indices) {
    for (int64_t s = 0; s <= t; ++s) keys.push_back(s);
    return keys;
  }
  for (int64_t slot = 0; slot < p.topk; ++slot) {
    const int32_t s = p.indices[t * p.topk + slot];
    if (s >= 0) keys.push_back(s);
  }
  return keys;
}

// scale · q[t, h] · k[s, h]
template <typename Real>
Real score(const MhaTrain<Real>& p, int64_t t, int64_t s, int64_t h) {
  const Real* q = p.q + (t * p.heads + h) * p.qk_dim;
  const Real* k = p.k + (s * p.heads + h) * p.qk_dim;
  Real dot = 0;
  for (int64_t i = 0; i < p.qk_dim; ++i) dot += q[i] * k[i];
  return p.scale * dot;
}

}  // namespace

template <typename Real>
void mha_train_forward_reference(const MhaTrain<Real>& p) {
  validate_forward(p);
  const int64_t H = p.heads, Dv = p.v_dim;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const std::vector<int64_t> keys = keys_of_row(p, t);
    for (int64_t h = 0; h < H; ++h) {
      Real* out = p.out + (t * H + h) * Dv;
      std::fill(out, out + Dv, Real(0));
      if (keys.empty()) {
        p.lse[t * H + h] = std::numeric_limits<Real>::infinity();
        continue;
      }
      std::vector<Real> scores;
      for (int64_t s : keys) scores.push_back(score(p, t, s, h));
      const Real max = *std::max_element(scores.begin(), scores.end());
      Real sum = 0;
      for (Real x : scores) sum += std::exp(x - max);
      for (size_t j = 0; j < keys.size(); ++j) {
        const Real prob = std::exp(scores[j] - max) / sum;
        const Real* v = p.v + (keys[j] * H + h) * Dv;
        for (int64_t i = 0; i < Dv; ++i) out[i] += prob * v[i];
      }
      p.lse[t * H + h] = max + std::log(sum);
    }
  }
}

template <typename Real>
void mha_backward_reference(const MhaTrain<Real>& p) {
  validate_backward(p);
  const int64_t T = p.tokens, H = p.heads, Dqk = p.qk_dim, Dv = p.v_dim;
  std::fill(p.dq, p.dq + T * H * Dqk, Real(0));
  std::fill(p.dk, p.dk + T * H * Dqk, Real(0));
  std::fill(p.dv, p.dv + T * H * Dv, Real(0));
  std::vector<std::vector<int64_t>> keys(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) keys[t] = keys_of_row(p, t);
  const auto row = [&](const Real* base, int64_t t, int64_t h, int64_t dim) {
    return base + (t * H + h) * dim;
  };
  for (int64_t h = 0; h < H; ++h) {
    // P[t][s] and dS[t][s] of this head; zero where row t does not attend to s.
    std::vector<Real> P(size_t(T * T), Real(0)), dS(size_t(T * T), Real(0));
    for (int64_t t = 0; t < T; ++t) {
      const Real lse = p.lse[t * H + h];
      if (std::isinf(lse)) continue;  // no valid key: no gradient
      const Real* dout = row(p.dout, t, h, Dv);
      const Real* out = row(p.out, t, h, Dv);
      Real delta = 0;  // Δ[t] = rowsum(dout ⊙ out)
      for (int64_t i = 0; i < Dv; ++i) delta += dout[i] * out[i];
      for (int64_t s : keys[t]) {
        const Real prob = std::exp(score(p, t, s, h) - lse);
        const Real* v = row(p.v, s, h, Dv);
        Real dprob = 0;  // dP[t][s] = dout[t] · v[s]
        for (int64_t i = 0; i < Dv; ++i) dprob += dout[i] * v[i];
        P[t * T + s] = prob;
        dS[t * T + s] = prob * (dprob - delta);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      Real* dq = p.dq + (t * H + h) * Dqk;
      for (int64_t s : keys[t]) {
        const Real* k = row(p.k, s, h, Dqk);
        for (int64_t i = 0; i < Dqk; ++i) dq[i] += p.scale * dS[t * T + s] * k[i];
      }
    }
    for (int64_t s = 0; s < T; ++s) {
      Real* dk = p.dk + (s * H + h) * Dqk;
      Real* dv = p.dv + (s * H + h) * Dv;
      for (int64_t t = s; t < T; ++t) {
        const Real* q = row(p.q, t, h, Dqk);
        const Real* dout = row(p.dout, t, h, Dv);
        for (int64_t i = 0; i < Dqk; ++i) dk[i] += p.scale * dS[t * T + s] * q[i];
        for (int64_t i = 0; i < Dv; ++i) dv[i] += P[t * T + s] * dout[i];
      }
    }
  }
}

template void validate(const MhaTrain<float>&);
template void validate(const MhaTrain<double>&);
template void validate_forward(const MhaTrain<float>&);
template void validate_forward(const MhaTrain<double>&);
template void validate_backward(const MhaTrain<float>&);
template void validate_backward(const MhaTrain<double>&);
template void mha_train_forward_reference(const MhaTrain<float>&);
template void mha_train_forward_reference(const MhaTrain<double>&);
template void mha_backward_reference(const MhaTrain<float>&);
template void mha_backward_reference(const MhaTrain<double>&);

}  // namespace dsa

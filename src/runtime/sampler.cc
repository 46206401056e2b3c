#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/error.h"

namespace dsa {
namespace {

// Descending logit, then ascending id: a strict order, so filters and ties are deterministic.
bool before(float a_logit, int32_t a_id, float b_logit, int32_t b_id) {
  return a_logit != b_logit ? a_logit > b_logit : a_id < b_id;
}

// Softmax of the candidates' logits divided by `temperature`, in double so that probabilities of
// hand-made logits are exact to ~1e-15 and sums over a 129K vocabulary lose nothing visible.
std::vector<double> softmax(std::span<const float> logits, double temperature) {
  const float max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((double(logits[i]) - double(max)) / temperature);
    sum += p[i];
  }
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace

void SamplerParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    fail("temperature must be a finite number >= 0 (0: greedy), got {}", temperature);
  }
  if (top_k < 0) fail("top_k must be >= 0 (0: off), got {}", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p must be in (0, 1] (1: off), got {}", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("min_p must be in [0, 1] (0: off), got {}", min_p);
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty)) {
    fail("repeat_penalty must be a finite number > 0 (1: off), got {}", repeat_penalty);
  }
  if (repeat_last_n < -1) {
    fail("repeat_last_n must be >= -1 (0: off, -1: all tokens), got {}", repeat_last_n);
  }
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

void Sampler::accept(int32_t token) {
  if (params_.repeat_last_n == 0) return;
  history_.push_back(token);
  if (params_.repeat_last_n > 0 && history_.size() > size_t(params_.repeat_last_n)) {
    history_.pop_front();
  }
}

void Sampler::reset_history() { history_.clear(); }

std::vector<Sampler::Candidate> Sampler::penalized(std::span<const float> logits) const {
  if (logits.empty()) fail("cannot sample from an empty vocabulary");
  std::vector<Candidate> c(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {int32_t(i), logits[i]};
  if (params_.repeat_penalty != 1.0f) {
    // Once per distinct token, however often it occurs (llama.cpp's repeat penalty).
    const std::unordered_set<int32_t> seen(history_.begin(), history_.end());
    for (const int32_t id : seen) {
      if (id < 0 || size_t(id) >= c.size()) continue;  // e.g. a prompt token past the sampled ids
      float& l = c[size_t(id)].logit;
      l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
    }
  }
  return c;
}

std::vector<TokenProbability> Sampler::distribution(std::span<const float> logits) const {
  std::vector<Candidate> c = penalized(logits);
  const auto order = [](const Candidate& a, const Candidate& b) {
    return before(a.logit, a.id, b.logit, b.id);
  };
  if (params_.temperature == 0.0f) {
    return {{std::min_element(c.begin(), c.end(), order)->id, 1.0}};
  }
  bool sorted = false;
  if (params_.top_k > 0 && size_t(params_.top_k) < c.size()) {
    std::partial_sort(c.begin(), c.begin() + params_.top_k, c.end(), order);
    c.resize(size_t(params_.top_k));
    sorted = true;
  }
  std::vector<float> l(c.size());
  const auto refresh = [&] {
    l.resize(c.size());
    for (size_t i = 0; i < c.size(); ++i) l[i] = c[i].logit;
  };
  refresh();
  if (params_.top_p < 1.0f) {
    // Probabilities from one normalizer over all candidates; only the prefix that reaches p is
    // sorted, grown 4x at a time (a full sort of a 129K vocabulary costs ~20 ms a token).
    const double max = *std::max_element(l.begin(), l.end());
    double z = 0;
    for (const float x : l) z += std::exp(double(x) - max);
    size_t keep = c.size();
    for (size_t m = std::min<size_t>(c.size(), 64);; m = std::min(c.size(), m * 4)) {
      if (!sorted) std::partial_sort(c.begin(), c.begin() + std::ptrdiff_t(m), c.end(), order);
      double sum = 0;
      for (size_t i = 0; i < m && keep == c.size(); ++i) {
        sum += std::exp(double(c[i].logit) - max) / z;
        if (sum >= double(params_.top_p)) keep = i + 1;
      }
      if (keep < c.size() || m == c.size()) break;
    }
    c.resize(keep);
    refresh();
  }
  if (params_.min_p > 0.0f) {
    // p_i >= min_p * p_max  <=>  logit_i - logit_max >= log(min_p), in double.
    const double max = *std::max_element(l.begin(), l.end());
    const double threshold = std::log(double(params_.min_p));
    std::erase_if(c, [&](const Candidate& x) { return double(x.logit) - max < threshold; });
    refresh();
  }
  const std::vector<double> p = softmax(l, double(params_.temperature));
  std::vector<TokenProbability> out(c.size());
  for (size_t i = 0; i < c.size(); ++i) out[i] = {c[i].id, p[i]};
  return out;
}

int32_t Sampler::sample(std::span<const float> logits) {
  const std::vector<TokenProbability> d = distribution(logits);
  if (d.size() == 1) return d[0].id;
  // The top 53 bits of one 64-bit draw, as a double in [0, 1).
  const double u = double(rng_() >> 11) * 0x1.0p-53;
  double sum = 0;
  for (const TokenProbability& t : d) {
    sum += t.probability;
    if (u < sum) return t.id;
  }
  return d.back().id;  // u beyond the rounded total
}

}  // namespace dsa

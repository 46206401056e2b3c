#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "ops/rope/rope.h"

namespace dsa {
namespace {

// REF find_correction_dim, in double as Python computes it: the pair index whose wavelength
// completes `rotations` turns over the original context.
double correction_dim(double rotations, int dim, double base, int64_t original_seq_len) {
  return dim * std::log(double(original_seq_len) / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

}  // namespace

std::vector<float> yarn_rope_frequencies(const YarnRopeConfig& config) {
  if (config.rope_dim <= 0 || config.rope_dim % 2 != 0 || config.rope_dim > kMaxRopeDim) {
    fail("rope: rope_dim must be even and in [2, {}], got {}", kMaxRopeDim, config.rope_dim);
  }
  const int pairs = config.rope_dim / 2;
  std::vector<float> freqs(pairs);
  for (int i = 0; i < pairs; ++i) {
    // 1 / base ** (arange(0, dim, 2) / dim), every step in fp32.
    const float exponent = float(2 * i) / float(config.rope_dim);
    freqs[i] = 1.0f / std::pow(config.theta, exponent);
  }
  if (config.max_seq_len <= config.original_seq_len) return freqs;

  const double low = std::max(std::floor(correction_dim(config.beta_fast, config.rope_dim,
                                                        config.theta, config.original_seq_len)),
                              0.0);
  double high = std::min(std::ceil(correction_dim(config.beta_slow, config.rope_dim, config.theta,
                                                  config.original_seq_len)),
                         double(config.rope_dim - 1));
  if (low == high) high += 0.001;  // REF linear_ramp_factor avoids a zero range this way
  for (int i = 0; i < pairs; ++i) {
    const float ramp = std::clamp((float(i) - float(low)) / float(high - low), 0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    freqs[i] = freqs[i] / config.factor * (1.0f - smooth) + freqs[i] * smooth;
  }
  return freqs;
}

RopeTable::RopeTable(const YarnRopeConfig& config)
    : positions_(config.max_seq_len), pairs_(config.rope_dim / 2) {
  if (config.max_seq_len <= 0)
    fail("rope: max_seq_len must be positive, got {}", config.max_seq_len);
  const std::vector<float> freqs = yarn_rope_frequencies(config);
  cos_.resize(size_t(positions_ * pairs_));
  sin_.resize(size_t(positions_ * pairs_));
  for (int64_t p = 0; p < positions_; ++p) {
    for (int i = 0; i < pairs_; ++i) {
      const float angle = float(p) * freqs[i];  // torch.outer in fp32
      cos_[p * pairs_ + i] = std::cos(angle);
      sin_[p * pairs_ + i] = std::sin(angle);
    }
  }
}

}  // namespace dsa

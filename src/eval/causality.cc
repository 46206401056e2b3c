#include "eval/causality.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace dsa::eval {

CausalityResult check_causality(const Model& model, std::span<const int32_t> tokens, int64_t j,
                                AttentionMode mode, int64_t chunk, ThreadPool& pool) {
  const int64_t T = int64_t(tokens.size()), V = model.config().vocab_size;
  if (j < 1 || j >= T) fail("causality: the changed position {} must be in [1, {})", j, T);
  ForwardOptions options;
  options.attention = mode;
  const std::vector<float> before = sequence_logits(model, tokens, T, chunk, options, pool);
  std::vector<int32_t> changed(tokens.begin(), tokens.end());
  changed[size_t(j)] = int32_t((int64_t(changed[size_t(j)]) + 1) % V);
  const std::vector<float> after = sequence_logits(model, changed, T, chunk, options, pool);

  CausalityResult r{.mode = mode,
                    .tokens = T,
                    .changed_position = j,
                    .rows_before = j,
                    .rows_differing = 0,
                    .max_abs_difference = 0,
                    .later_rows_changed = false};
  for (int64_t t = 0; t < T; ++t) {
    const float* a = before.data() + t * V;
    const float* b = after.data() + t * V;
    const bool same = std::memcmp(a, b, size_t(V) * sizeof(float)) == 0;
    if (t >= j) {
      r.later_rows_changed = r.later_rows_changed || !same;
      continue;
    }
    if (same) continue;
    ++r.rows_differing;
    for (int64_t v = 0; v < V; ++v) {
      r.max_abs_difference = std::max(r.max_abs_difference, std::fabs(double(a[v]) - b[v]));
    }
  }
  return r;
}

}  // namespace dsa::eval

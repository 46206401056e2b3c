#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/topk/topk.h"

namespace dsa {

void validate(const TopkParams& params) {
  if (params.rows < 0 || params.cols < 0 || params.k <= 0) {
    fail("topk: need rows >= 0, cols >= 0, k > 0; got rows {}, cols {}, k {}", params.rows,
         params.cols, params.k);
  }
  if (params.min_split_columns < 1) {
    fail("topk: min_split_columns must be at least 1, got {}", params.min_split_columns);
  }
  if (params.cols > std::numeric_limits<int32_t>::max()) {
    fail("topk: {} columns do not fit int32 indices", params.cols);
  }
  if (params.rows > 0 && (!params.scores || !params.indices)) {
    fail("topk: scores and indices must be set");
  }
}

void topk_select_reference(const TopkParams& params) {
  validate(params);
  for (int64_t r = 0; r < params.rows; ++r) {
    const float* scores = params.scores + r * params.cols;
    std::vector<int32_t> valid;
    for (int64_t s = 0; s < params.cols; ++s) {
      if (!std::isnan(scores[s]) && scores[s] != -std::numeric_limits<float>::infinity()) {
        valid.push_back(int32_t(s));
      }
    }
    std::sort(valid.begin(), valid.end(), [&](int32_t a, int32_t b) {
      return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
    });
    const size_t selected = std::min(valid.size(), size_t(params.k));
    std::sort(valid.begin(), valid.begin() + ptrdiff_t(selected));
    int32_t* out = params.indices + r * params.k;
    for (int64_t i = 0; i < params.k; ++i) out[i] = size_t(i) < selected ? valid[size_t(i)] : -1;
  }
}

}  // namespace dsa

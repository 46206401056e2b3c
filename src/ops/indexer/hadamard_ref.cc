#include <bit>
#include <cmath>

#include "core/error.h"
#include "ops/indexer/hadamard.h"

namespace dsa {

void validate(const HadamardParams& params) {
  if (params.rows < 0) fail("hadamard: rows must be >= 0, got {}", params.rows);
  if (params.rows > 0 && (params.x == nullptr || params.out == nullptr)) {
    fail("hadamard: x and out must not be null for {} rows", params.rows);
  }
}

void hadamard_128_reference(const HadamardParams& params) {
  validate(params);
  const float scale = kHadamardScale;
  float x[kHadamardDim];
  for (int64_t r = 0; r < params.rows; ++r) {
    for (int j = 0; j < kHadamardDim; ++j) x[j] = bf16_to_float(params.x[r * kHadamardDim + j]);
    for (int i = 0; i < kHadamardDim; ++i) {
      float sum = 0.0f;
      for (int j = 0; j < kHadamardDim; ++j) {
        const bool negative = std::popcount(unsigned(i & j)) % 2 == 1;
        sum += negative ? -x[j] : x[j];
      }
      params.out[r * kHadamardDim + i] = float_to_bf16(sum * scale);
    }
  }
}

}  // namespace dsa

#include "core/error.h"
#include "ops/rope/rope.h"

namespace dsa {

void validate(const RopeParams& params) {
  if (params.table == nullptr) fail("rope: no RopeTable given");
  if (params.x == nullptr && params.tokens > 0) fail("rope: x is null");
  if (params.tokens < 0) fail("rope: tokens must be >= 0, got {}", params.tokens);
  if (params.heads <= 0) fail("rope: heads must be > 0, got {}", params.heads);
  const int64_t width = 2 * params.table->pairs();
  if (params.offset < 0 || params.offset + width > params.row) {
    fail("rope: rotated dims [{}, {}) do not fit in a row of {} elements", params.offset,
         params.offset + width, params.row);
  }
  if (params.start_pos < 0 || params.start_pos + params.tokens > params.table->positions()) {
    fail("rope: positions [{}, {}) exceed the table's {} positions", params.start_pos,
         params.start_pos + params.tokens, params.table->positions());
  }
}

void apply_rope_reference(const RopeParams& params) {
  validate(params);
  const int pairs = params.table->pairs();
  for (int64_t t = 0; t < params.tokens; ++t) {
    const float* cos = params.table->cos(params.start_pos + t);
    const float* sin = params.table->sin(params.start_pos + t);
    for (int64_t h = 0; h < params.heads; ++h) {
      bf16* x = params.x + (t * params.heads + h) * params.row + params.offset;
      for (int i = 0; i < pairs; ++i) {
        // The pair (a, b) is the complex number a + ib, multiplied by cos + i sin.
        const int ia = params.layout == RopeLayout::kInterleaved ? 2 * i : i;
        const int ib = params.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + pairs;
        const float a = bf16_to_float(x[ia]);
        const float b = bf16_to_float(x[ib]);
        x[ia] = float_to_bf16(a * cos[i] - b * sin[i]);
        x[ib] = float_to_bf16(a * sin[i] + b * cos[i]);
      }
    }
  }
}

}  // namespace dsa

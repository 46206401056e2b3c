// Sizes computed from untrusted numbers (config keys, header shapes) in int64 without undefined
// behaviour: each helper says whether the exact result fits, and callers turn "no" into an error
// that names the numbers' source.
#pragma once

#include <cstdint>
#include <optional>

namespace dsa {

inline std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

inline std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) return std::nullopt;
  return sum;
}

}  // namespace dsa

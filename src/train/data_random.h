// Counter-based randomness for the data pipeline: every random choice (held-out membership, the
// synthetic samples, the order of batches) is a pure function of a seed and a few integers, so a
// data set rebuilds bit for bit and a resumed run draws exactly the batches it would have drawn.
#pragma once

#include <cstdint>
#include <string_view>

namespace dsa::train {

// 128-bit products for exact range reduction (__extension__: GCC and Clang, not ISO C++).
__extension__ typedef unsigned __int128 Uint128;

// SplitMix64's finaliser: a bijection of 64-bit words with good avalanche.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A hash of an ordered pair (not symmetric: hash_pair(a, b) != hash_pair(b, a) in general).
constexpr uint64_t hash_pair(uint64_t a, uint64_t b) {
  return mix64(mix64(a) ^ (b * 0xd6e8feb86659fd93ull));
}

// 64-bit FNV-1a, mixed: a stable hash of a name (independent of the platform and the run).
constexpr uint64_t hash_text(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : text) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return mix64(h);
}

// The SplitMix64 generator: a stream of words from one seed.
class SplitMix64 {
 public:
  explicit constexpr SplitMix64(uint64_t seed) : state_(seed) {}
  constexpr uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1 (Lemire's multiply-shift; the bias is below n / 2^64).
  constexpr uint64_t below(uint64_t n) {
    return uint64_t((static_cast<Uint128>(next()) * n) >> 64);
  }
  // Uniform in [0, 1) with 53 random bits.
  constexpr double unit() { return double(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace dsa::train

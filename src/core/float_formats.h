// Narrow floating-point formats, converted exactly as PyTorch does:
//   bf16        round to nearest even; every NaN becomes 0x7FC0.
//   fp16        IEEE binary16, round to nearest even, overflow to ±inf, NaN keeps its sign (0x7E00).
//   fp8 e4m3fn  1-4-3, bias 7, max finite 448, no infinities; NaN is S.1111.111. Round to nearest
//               even; |x| >= 480 (and inf, NaN) becomes NaN, so (464, 480) rounds up into NaN as in
//               c10. Callers that must not produce NaN clamp to ±448 first (DeepSeek's act_quant).
// The types are plain bit containers: arithmetic always happens in float.
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>

namespace dsa {

struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};
struct fp8_e4m3 {
  uint8_t bits;
};

// ---- bf16 ---------------------------------------------------------------------------------------

inline float bf16_to_float(bf16 x) { return std::bit_cast<float>(uint32_t(x.bits) << 16); }

inline bf16 float_to_bf16(float x) {
  uint32_t bits = std::bit_cast<uint32_t>(x);
  if (std::isnan(x)) return bf16{0x7FC0};
  uint32_t lsb = (bits >> 16) & 1u;  // ties go to the even result
  return bf16{uint16_t((bits + 0x7FFFu + lsb) >> 16)};
}

// The float nearest to x that a bf16 can hold (the rounding point of a bf16 tensor).
inline float round_to_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }

// ---- fp16 ---------------------------------------------------------------------------------------

float fp16_to_float(fp16 x);
fp16 float_to_fp16(float x);

// ---- fp8 e4m3fn ---------------------------------------------------------------------------------

constexpr float kFp8E4M3Max = 448.0f;

// Exact value of an fp8 code (NaN for 0x7F and 0xFF).
constexpr float fp8_e4m3_value(uint8_t code) {
  const bool negative = code & 0x80;
  const int exponent = (code >> 3) & 0xF;
  const int mantissa = code & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = float(mantissa) / 512.0f;  // subnormal: mantissa * 2^-9
  } else {
    magnitude = (1.0f + float(mantissa) / 8.0f) *
                (exponent >= 7 ? float(1 << (exponent - 7)) : 1.0f / float(1 << (7 - exponent)));
  }
  return negative ? -magnitude : magnitude;
}

namespace detail {
constexpr std::array<float, 256> make_fp8_table() {
  std::array<float, 256> table{};
  for (int code = 0; code < 256; ++code) table[code] = fp8_e4m3_value(uint8_t(code));
  return table;
}
inline constexpr std::array<float, 256> kFp8E4M3Table = make_fp8_table();
}  // namespace detail

inline float fp8_to_float(fp8_e4m3 x) { return detail::kFp8E4M3Table[x.bits]; }

fp8_e4m3 float_to_fp8(float x);

// The float nearest to x that an fp8 e4m3fn can hold (NaN past the range, as float_to_fp8).
inline float round_to_fp8(float x) { return fp8_to_float(float_to_fp8(x)); }

}  // namespace dsa

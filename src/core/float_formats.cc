#include "core/float_formats.h"

namespace dsa {
namespace {

// Rounds the magnitude bits `bits` right by `shift` places, to nearest, ties to even.
uint32_t shift_round_nearest_even(uint32_t bits, int shift) {
  const uint32_t kept = bits >> shift;
  const uint32_t rest = bits & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  const bool round_up = rest > half || (rest == half && (kept & 1u));
  return kept + (round_up ? 1u : 0u);
}

}  // namespace

float fp16_to_float(fp16 x) {
  const uint32_t sign = uint32_t(x.bits & 0x8000u) << 16;
  const int exponent = (x.bits >> 10) & 0x1F;
  const uint32_t mantissa = x.bits & 0x3FFu;
  float magnitude;
  if (exponent == 0x1F) {
    magnitude =
        mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else if (exponent == 0) {
    magnitude = std::ldexp(float(mantissa), -24);  // subnormal: mantissa * 2^-24, exact
  } else {
    magnitude = std::ldexp(float(mantissa | 0x400u), exponent - 25);
  }
  return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
}

fp16 float_to_fp16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return fp16{uint16_t(sign | 0x7E00u)};  // NaN
  const int exponent = int(magnitude >> 23) - 127;
  if (exponent >= 16) return fp16{uint16_t(sign | 0x7C00u)};  // too large, or inf
  if (exponent < -25) return fp16{sign};                      // below half the smallest subnormal
  if (exponent < -14) {
    // Subnormal result: units of 2^-24. The implicit bit joins the mantissa before rounding.
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    return fp16{uint16_t(sign | shift_round_nearest_even(mantissa, -exponent - 1))};
  }
  // Normal: keep 10 of 23 mantissa bits; a carry out of the mantissa bumps the exponent, and past
  // the largest finite value becomes inf (0x7C00), as IEEE requires.
  const uint32_t rebased = (uint32_t(exponent + 15) << 23) | (magnitude & 0x7FFFFFu);
  return fp16{uint16_t(sign | shift_round_nearest_even(rebased, 13))};
}

fp8_e4m3 float_to_fp8(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  constexpr uint32_t k480 = 0x43F00000u;  // 480.0f: first value past the fp8 range
  if (magnitude >= k480) return fp8_e4m3{uint8_t(sign | 0x7Fu)};  // NaN, inf, too large
  const int exponent = int(magnitude >> 23) - 127;
  if (exponent < -6) {
    // Subnormal result: units of 2^-9; 8 units round up into the smallest normal code 0x08.
    if (exponent < -11) return fp8_e4m3{sign};  // below half the smallest subnormal
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    return fp8_e4m3{uint8_t(sign | shift_round_nearest_even(mantissa, 14 - exponent))};
  }
  // Normal: keep 3 of 23 mantissa bits. Values in (464, 480) round up to code 0x7F, NaN, as c10.
  const uint32_t rebased = (uint32_t(exponent + 7) << 23) | (magnitude & 0x7FFFFFu);
  return fp8_e4m3{uint8_t(sign | shift_round_nearest_even(rebased, 20))};
}

}  // namespace dsa

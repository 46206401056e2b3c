// GEMMs y = x · Wᵀ for fp32, bf16 and FP8 block-scaled weights: reference and both fast kernels
// (Highway dot kernel, OpenBLAS) for every shape, checked against an exact double sum.
//
// Tolerance per output: an fp32 sum of K products in any order is within
//   γ_K Σ|x_k w_k|,  γ_K = K 2^-24 / (1 - K 2^-24)
// of the exact sum (the FP8 products of codes are exact; the BLAS path's fp32 W * S adds one
// rounding per term, inside γ_K for K >= 2). A bf16 output adds u |y| with u = 2^-8 (bf16 keeps 8
// significant bits).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "ops/gemm/gemm.h"
#include "simd_targets.h"

namespace dsa {
namespace {

struct Weights {
  std::vector<float> f32;       // [N, K]
  std::vector<bf16> b16;        // [N, K]
  std::vector<fp8_e4m3> codes;  // [N, K]
  std::vector<float> scales;    // [ceil(N/128), ceil(K/128)]
};

Weights make_weights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  Weights w{std::vector<float>(size_t(n * k)), std::vector<bf16>(size_t(n * k)),
            std::vector<fp8_e4m3>(size_t(n * k)),
            std::vector<float>(size_t(weight_scale_rows(n) * weight_scale_cols(k)))};
  for (int64_t i = 0; i < n * k; ++i) {
    // Rows of different magnitude so the 128-row scale blocks differ.
    w.f32[i] = round_to_bf16(dist(rng) * float(1 + (i / k) % 7));
    w.b16[i] = float_to_bf16(w.f32[i]);
  }
  quantize_weight_fp8(w.f32.data(), n, k, w.codes.data(), w.scales.data());
  return w;
}

std::vector<float> make_activations(int64_t m, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(size_t(m * k));
  for (int64_t i = 0; i < m * k; ++i) x[i] = round_to_bf16(dist(rng) * float(1 + (i % 128) / 32));
  return x;
}

// The exact result and the tolerance of each output.
void exact_gemm(const GemmParams& p, std::vector<double>& exact, std::vector<double>& tolerance) {
  const int64_t blocks = weight_scale_cols(p.k);
  exact.assign(size_t(p.m * p.n), 0.0);
  tolerance.assign(size_t(p.m * p.n), 0.0);
  const double gamma = double(p.k) * 0x1p-24 / (1 - double(p.k) * 0x1p-24);
  std::vector<float> x(size_t(p.k)), x_scales(static_cast<size_t>(blocks));
  for (int64_t m = 0; m < p.m; ++m) {
    if (p.weight_dtype == DType::F8_E4M3) {  // the real numbers x_q * s_x the GEMM multiplies
      act_quant_padded_row(p.x + m * p.k, p.k, p.act_scales, x.data(), x_scales.data());
      for (int64_t k = 0; k < p.k; ++k) x[k] *= x_scales[k / kFp8BlockSize];
    } else {
      std::copy(p.x + m * p.k, p.x + (m + 1) * p.k, x.begin());
    }
    for (int64_t n = 0; n < p.n; ++n) {
      double sum = 0, magnitude = 0;
      for (int64_t k = 0; k < p.k; ++k) {
        double w;
        if (p.weight_dtype == DType::F32) {
          w = static_cast<const float*>(p.weight)[n * p.k + k];
        } else if (p.weight_dtype == DType::BF16) {
          w = bf16_to_float(static_cast<const bf16*>(p.weight)[n * p.k + k]);
        } else {
          w = double(fp8_to_float(static_cast<const fp8_e4m3*>(p.weight)[n * p.k + k])) *
              p.weight_scale[(n / kFp8BlockSize) * blocks + k / kFp8BlockSize];
        }
        sum += double(x[k]) * w;
        magnitude += std::fabs(double(x[k]) * w);
      }
      const double bound = gamma * magnitude;
      exact[m * p.n + n] = sum;
      tolerance[m * p.n + n] =
          bound + (p.round_output_to_bf16 ? 0x1p-8 * (std::fabs(sum) + bound) : 0.0);
    }
  }
}

void check_case(DType dtype, int64_t m, int64_t n, int64_t k) {
  const Weights w = make_weights(n, k, uint32_t(n * 31 + k));
  const std::vector<float> x = make_activations(m, k, uint32_t(m * 17 + k));
  GemmParams p;
  p.x = x.data();
  p.weight_dtype = dtype;
  p.weight = dtype == DType::F32    ? static_cast<const void*>(w.f32.data())
             : dtype == DType::BF16 ? static_cast<const void*>(w.b16.data())
                                    : static_cast<const void*>(w.codes.data());
  p.weight_scale = dtype == DType::F8_E4M3 ? w.scales.data() : nullptr;
  p.round_output_to_bf16 = dtype != DType::F32;
  p.m = m;
  p.n = n;
  p.k = k;
  std::vector<double> exact, tolerance;
  exact_gemm(p, exact, tolerance);
  // Reference, then each fast kernel with 1 and 2 threads.
  for (int version = 0; version < 5; ++version) {
    std::vector<float> y(size_t(m * n), -1.0f);
    p.y = y.data();
    if (version == 0) {
      gemm_ref(p);
    } else {
      p.kernel = version <= 2 ? GemmKernel::kDot : GemmKernel::kBlas;
      ThreadPool pool(2 - version % 2);
      gemm(p, pool);
    }
    for (int64_t i = 0; i < m * n; ++i) {
      ASSERT_NEAR(y[i], exact[i], tolerance[i])
          << dtype_name(dtype) << " M=" << m << " N=" << n << " K=" << k << " version " << version
          << " at [" << i / n << ", " << i % n << "]";
      if (p.round_output_to_bf16) {
        ASSERT_EQ(y[i], round_to_bf16(y[i])) << "not a bf16 value";
      }
    }
  }
}

class Gemm : public ::testing::TestWithParam<DType> {};

TEST_P(Gemm, MatchesExactSumAroundSimdWidthsAndBlocks) {
  // M around the 4-row blocking (both kernels run for every M); K and N around SIMD widths
  // and 128-blocks (not multiples of 128 for FP8).
  const std::vector<std::array<int64_t, 2>> shapes = {{5, 16},   {1, 17},    {129, 128},
                                                      {16, 130}, {260, 300}, {3, 1}};
  for (int64_t m : {1, 3, 4, 5, 17, 33}) {
    for (const auto& [n, k] : shapes) check_case(GetParam(), m, n, k);
  }
}

TEST_P(Gemm, EverySimdTarget) {
  test::for_each_simd_target([&] {
    check_case(GetParam(), 5, 129, 130);
    check_case(GetParam(), 3, 16, 17);
  });
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, Gemm,
                         ::testing::Values(DType::F32, DType::BF16, DType::F8_E4M3),
                         [](const auto& param_info) {
                           return std::string(dtype_name(param_info.param));
                         });

TEST(GemmFp8, ActivationQuantizationIsPartOfTheResult) {
  // One row, K = 256: block 0 all 1.1015625 (bf16 of 1.1), block 1 all 3; W codes all 1.0 with
  // block scales 0.5 and 2. ue8m0: s_0 = 2^-8, 1.1015625 / s_0 = 282 -> fp8 288 -> x_q s_0 = 1.125;
  // s_1 = 2^-7, 3 / s_1 = 384 (exact). y = 128 * 1.125 * 0.5 + 128 * 3 * 2 = 72 + 768 = 840,
  // not the unquantized 838.5.
  std::vector<float> x(256, 1.1015625f);
  std::fill(x.begin() + 128, x.end(), 3.0f);
  const std::vector<fp8_e4m3> w(256, float_to_fp8(1.0f));
  const std::vector<float> scales = {0.5f, 2.0f};
  for (int version = 0; version < 3; ++version) {
    float y = 0;
    GemmParams p{x.data(),
                 w.data(),
                 DType::F8_E4M3,
                 scales.data(),
                 ScaleFormat::kUe8m0,
                 true,
                 &y,
                 1,
                 1,
                 256,
                 version == 1 ? GemmKernel::kDot : GemmKernel::kBlas};
    ThreadPool pool(1);
    version == 0 ? gemm_ref(p) : gemm(p, pool);
    EXPECT_EQ(y, 840.0f) << "version " << version;
  }
}

TEST(GemmValidation, RejectsBadParameters) {
  float x = 1, y = 0, w = 1;
  auto expect_error = [](const GemmParams& p, const std::string& message) {
    try {
      gemm_ref(p);
      FAIL() << "accepted: " << message;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(message), std::string::npos) << error.what();
    }
    ThreadPool pool(1);
    EXPECT_THROW(gemm(p, pool), Error);
  };
  GemmParams p{&x, &w, DType::I32, nullptr, ScaleFormat::kUe8m0, false,
               &y, 1,  1,          1,       GemmKernel::kAuto};
  expect_error(p, "unsupported weight dtype");
  p.weight_dtype = DType::F8_E4M3;
  expect_error(p, "F8_E4M3 weight [1, 1] without its block scales");
  p.weight_scale = &w;
  expect_error(p, "output is bf16");
  p.weight_dtype = DType::F32;
  p.k = -1;
  expect_error(p, "negative shape M=1 N=1 K=-1");
}

}  // namespace
}  // namespace dsa

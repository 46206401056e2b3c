#include <gtest/gtest.h>

#include "core/cpu_features.h"

namespace dsa {
namespace {

TEST(CpuFeatures, AgreesWithTheCompilerWhereBothKnowTheFeature) {
  const CpuFeatures features = detect_cpu_features();
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  EXPECT_EQ(features.avx2, bool(__builtin_cpu_supports("avx2")));
  EXPECT_EQ(features.fma, bool(__builtin_cpu_supports("fma")));
  EXPECT_EQ(features.avx512f, bool(__builtin_cpu_supports("avx512f")));
  EXPECT_EQ(features.avx512bf16, bool(__builtin_cpu_supports("avx512bf16")));
#endif
  // Feature implications that hold on every x86 CPU.
  if (features.avx512f) EXPECT_TRUE(features.avx2);
  if (features.avx512bf16) EXPECT_TRUE(features.avx512f);
}

}  // namespace
}  // namespace dsa

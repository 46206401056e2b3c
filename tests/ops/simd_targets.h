// Runs a test body once per SIMD target that the Highway kernels were compiled for and this CPU
// supports (e.g. AVX3, AVX2, SSE4 on an AVX-512 machine), so the paths a machine without AVX-512
// takes are tested here too.
#pragma once

#include <gtest/gtest.h>

#include "hwy/targets.h"

namespace dsa::test {

template <class Body>
void for_each_simd_target(Body body) {
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(hwy::TargetName(target));
    hwy::SetSupportedTargetsForTest(target);
    body();
  }
  hwy::SetSupportedTargetsForTest(0);  // back to the best target
}

}  // namespace dsa::test

// What the CPU this process runs on can do: for reports, and to pick the AVX512-BF16 kernels
// (indexer scores, MLA q·k) that Highway 1.0.3 cannot express; other kernels dispatch through
// Highway.
#pragma once

namespace dsa {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bf16 = false;
};

CpuFeatures detect_cpu_features();

}  // namespace dsa

// Matrix products as fixed-shape, single-threaded sgemm calls (ops/gemm/sgemm.h: our AVX-512
// kernel, or OpenBLAS without AVX-512) spread over the pool's threads. Used by the training ops:
// OpenBLAS's own threads would compete with the pool's spinning workers on a small machine, and
// fixed block shapes make each output element's rounding independent of the thread count
// (OpenBLAS picks kernels by matrix size).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"
#include "ops/gemm/sgemm.h"  // IWYU pragma: export

namespace dsa {

// OpenBLAS single-threaded while it lives (the pool's threads call it), restored after; nothing
// to do when sgemm() runs our own kernel.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(sgemm_calls_openblas() ? openblas_get_num_threads() : 1) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

// body(begin, end) over [0, n) in blocks of `block`, one block per call: on the pool's threads,
// or on the calling thread when `parallel` is false or there is one block. The blocks are the
// same either way, so the results are too.
template <typename Body>
void for_blocks(ThreadPool& pool, int64_t n, int64_t block, const Body& body,
                bool parallel = true) {
  const int64_t count = (n + block - 1) / block;
  if (count <= 1 || !parallel || pool.size() == 1) {
    for (int64_t b = 0; b < count; ++b) body(b * block, std::min(n, (b + 1) * block));
    return;
  }
  pool.parallel_for(count, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) body(b * block, std::min(n, (b + 1) * block));
  });
}

}  // namespace dsa

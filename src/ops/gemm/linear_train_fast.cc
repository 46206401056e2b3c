// The training linear layer on OpenBLAS sgemm (see linear_train.h), row-major throughout.
#include <cblas.h>

#include "ops/gemm/linear_train.h"

namespace dsa {

void linear_train_forward(const LinearTrainParams& p, ThreadPool& pool) {
  validate_forward(p);
  if (p.m == 0) return;
  const int m = int(p.m), n = int(p.n), k = int(p.k);
  // y[M, N] = x[M, K] · W[N, K]ᵀ
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, p.x, k, p.weight, k, 0.0f,
              p.y, n);
}

void linear_backward(const LinearTrainParams& p, ThreadPool& pool) {
  validate_backward(p);
  if (p.m == 0) return;
  const int m = int(p.m), n = int(p.n), k = int(p.k);
  if (p.dx) {
    // dx[M, K] += dy[M, N] · W[N, K]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f, p.dy, n, p.weight, k,
                1.0f, p.dx, k);
  }
  if (p.dweight) {
    // dW[N, K] += dy[M, N]ᵀ · x[M, K]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f, p.dy, n, p.x, k, 1.0f,
                p.dweight, k);
  }
}

}  // namespace dsa

// The training linear layer on single-threaded sgemm calls (see linear_train.h and
// ops/gemm/sgemm.h), row-major throughout.
//
// Every sgemm call has a shape fixed by the weight alone: the M rows go in blocks of exactly
// kRowBlock rows, the last one zero-padded in scratch. Our AVX-512 sgemm's rounding depends on
// the depth alone, but the OpenBLAS fallback picks its kernels and its summation order by the
// call's shape (a small-matrix kernel below M·N·K = 10^6 on its AVX-512 targets, K-blocking by
// the reduction length), so with shapes that follow M, one token's result would depend on how
// many other tokens share the call. Fixed blocks make each row of y and dx, and each block's
// contribution to dW, a function of that block's values only: the expert batches of
// train_ffn.cc (whose size depends on the routing of every token, later ones included) keep
// bit-exact causality whichever kernel runs. dW sums its row blocks in block order; a padded row
// adds an exact zero.
//
// The blocks (and dW's output blocks) are spread over the pool's threads, each block one
// single-threaded sgemm: OpenBLAS's own threads would compete with the pool's for the same cores
// (after each call they spin and sched_yield for a while; on a 2-core machine that took a third
// of a training step, measured with perf, docs/training-speed.md). Blocks depend on the shapes
// only, never on the thread count, so results are bit-identical for any thread count.
#include <algorithm>
#include <vector>

#include "ops/gemm/blas_blocks.h"
#include "ops/gemm/linear_train.h"

namespace dsa {
namespace {

// Rows of x, dy (and y, dx) per sgemm call: large enough that repacking the weight per call
// costs little (measured with OpenBLAS: 256-row calls run at 90-100% of one whole-matrix call;
// our sgemm takes 264 rows in one block).
constexpr int64_t kRowBlock = 256;
// Output rows or columns of dW per task.
constexpr int64_t kWeightBlock = 128;
// Below this many multiply-adds a product runs on the calling thread (the same calls).
constexpr double kSplitWork = 1 << 20;

int64_t blocks(int64_t n, int64_t block) { return (n + block - 1) / block; }

// Products below kSplitWork multiply-adds run on the calling thread (the same blocks).
template <typename Body>
void split_blocks(ThreadPool& pool, int64_t n, int64_t block, double work, const Body& body) {
  for_blocks(pool, n, block, body, work >= kSplitWork);
}

// Rows [r0, r0 + kRowBlock) of a [rows, cols] matrix: the matrix itself where the block is
// whole, else a zero-padded copy of the last, partial block (made once, before the threads).
class RowBlocks {
 public:
  RowBlocks(const float* data, int64_t rows, int64_t cols) : data_(data), rows_(rows), cols_(cols) {
    const int64_t whole = rows / kRowBlock * kRowBlock;
    if (whole < rows) {
      last_.assign(size_t(kRowBlock * cols), 0.0f);
      std::copy(data + whole * cols, data + rows * cols, last_.begin());
    }
  }
  const float* block(int64_t r0) const {
    return r0 + kRowBlock <= rows_ ? data_ + r0 * cols_ : last_.data();
  }

 private:
  const float* data_;
  int64_t rows_, cols_;
  std::vector<float> last_;
};

// out[r0 : r1] (+)= the block's kRowBlock-row result, through scratch for a partial block.
template <typename Product>
void into_rows(float* out, int64_t r0, int64_t r1, int64_t cols, bool accumulate,
               const Product& product) {
  if (r1 - r0 == kRowBlock) {
    product(out + r0 * cols);
    return;
  }
  std::vector<float> scratch(size_t(kRowBlock * cols), 0.0f);
  if (accumulate) std::copy(out + r0 * cols, out + r1 * cols, scratch.begin());
  product(scratch.data());
  std::copy(scratch.begin(), scratch.begin() + (r1 - r0) * cols, out + r0 * cols);
}

}  // namespace

void linear_train_forward(const LinearTrainParams& p, ThreadPool& pool) {
  validate_forward(p);
  if (p.m == 0) return;
  const int n = int(p.n), k = int(p.k), rows = int(kRowBlock);
  const SingleThreadedBlas single;
  const RowBlocks x(p.x, p.m, p.k);
  // y[M, N] = x[M, K] · W[N, K]ᵀ
  split_blocks(pool, p.m, kRowBlock, double(p.m) * double(n) * double(k),
               [&](int64_t r0, int64_t r1) {
                 into_rows(p.y, r0, r1, p.n, false, [&](float* y) {
                   sgemm(p.precision, false, true, rows, n, k, 1.0f, x.block(r0), k, p.weight, k,
                         0.0f, y, n);
                 });
               });
}

void linear_backward(const LinearTrainParams& p, ThreadPool& pool) {
  validate_backward(p);
  if (p.m == 0) return;
  const int n = int(p.n), k = int(p.k), rows = int(kRowBlock);
  const double work = double(p.m) * double(n) * double(k);
  const SingleThreadedBlas single;
  const RowBlocks dy(p.dy, p.m, p.n);
  if (p.dx) {
    // dx[M, K] += dy[M, N] · W[N, K]
    split_blocks(pool, p.m, kRowBlock, work, [&](int64_t r0, int64_t r1) {
      into_rows(p.dx, r0, r1, p.k, true, [&](float* dx) {
        sgemm(p.precision, false, false, rows, k, n, 1.0f, dy.block(r0), n, p.weight, k, 1.0f, dx,
              k);
      });
    });
  }
  if (p.dweight) {
    // dW[N, K] += Σ over row blocks, in order, of dy_blockᵀ · x_block; tasks take blocks of
    // dW's rows or columns (the longer side), each summing every row block.
    const RowBlocks x(p.x, p.m, p.k);
    const int64_t row_blocks = blocks(p.m, kRowBlock);
    if (n >= k) {
      split_blocks(pool, p.n, kWeightBlock, work, [&](int64_t j0, int64_t j1) {
        for (int64_t b = 0; b < row_blocks; ++b) {
          sgemm(p.precision, true, false, int(j1 - j0), k, rows, 1.0f, dy.block(b * kRowBlock) + j0,
                n, x.block(b * kRowBlock), k, 1.0f, p.dweight + j0 * k, k);
        }
      });
    } else {
      split_blocks(pool, p.k, kWeightBlock, work, [&](int64_t c0, int64_t c1) {
        for (int64_t b = 0; b < row_blocks; ++b) {
          sgemm(p.precision, true, false, n, int(c1 - c0), rows, 1.0f, dy.block(b * kRowBlock), n,
                x.block(b * kRowBlock) + c0, k, 1.0f, p.dweight + c0, k);
        }
      });
    }
  }
}

}  // namespace dsa

// `dsa logits` gives bit-identical logits for any thread count: -t 1, 2 and 3, with OpenBLAS's
// own thread count set differently each time, on a whole prefill, a prefill followed by decode,
// and a chunked prefill, for bf16 and FP8 weights. Every product runs in blocks fixed by the
// shapes (never by the thread count) and every reduction in a fixed order; a prompt of 300
// tokens takes the prefill's sgemm path with more than one 256-row block.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>

#include "support/test_util.h"

namespace dsa {
namespace {

using test::run_dsa;
using test::TempDir;

std::string random_tokens(int count, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  std::string out;
  for (int i = 0; i < count; ++i) out += (i ? " " : "") + std::to_string(pick(rng));
  return out;
}

void expect_same_logits_for_any_thread_count(const std::string& dtype) {
  TempDir dir;
  const std::string model = (dir / "model").string();
  const auto init =
      run_dsa(fmt::format("init-model --preset tiny --dtype {} --seed 4 -o {}", dtype, model));
  ASSERT_EQ(init.exit_code, 0) << init.err;
  const std::string tokens = random_tokens(300, 1024, 8);
  for (const std::string schedule : {"", "--prefill 260", "--chunk 96"}) {
    std::string first;
    for (int threads : {1, 2, 3}) {
      const std::string out = (dir / fmt::format("t{}.npy", threads)).string();
      // OpenBLAS's own thread count (inherited through the environment) differs from -t.
      ::setenv("OPENBLAS_NUM_THREADS", std::to_string(4 - threads).c_str(), 1);
      const auto r = run_dsa(fmt::format("logits -m {} --tokens '{}' {} -t {} -o {}", model, tokens,
                                         schedule, threads, out));
      ::unsetenv("OPENBLAS_NUM_THREADS");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const std::string bytes = test::read_text_file(out);
      ASSERT_GT(bytes.size(), size_t(300 * 1024 * 4));
      if (threads == 1) {
        first = bytes;
      } else {
        EXPECT_TRUE(bytes == first) << dtype << ", schedule '" << schedule << "': -t " << threads
                                    << " gives other logits than -t 1";
      }
    }
  }
}

TEST(ThreadDeterminism, Bf16LogitsAreTheSameForAnyThreadCount) {
  expect_same_logits_for_any_thread_count("bf16");
}

TEST(ThreadDeterminism, Fp8LogitsAreTheSameForAnyThreadCount) {
  expect_same_logits_for_any_thread_count("fp8");
}

}  // namespace
}  // namespace dsa

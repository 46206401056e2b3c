// `dsa logits` and `dsa generate` end to end on a tiny random model (bf16 weights: on FP8 ones,
// re-quantizing every projection input amplifies summation-order differences between schedules,
// see tests/model/test_forward.cc): the .npy they write, the schedule flags, greedy decoding,
// and the errors a user can cause.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "support/test_util.h"

namespace dsa {
namespace {

using test::run_dsa;
using test::TempDir;

class LogitsCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const auto r =
        run_dsa(fmt::format("init-model --preset tiny --dtype bf16 --seed 3 -o {}", model()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string model() { return (dir_->path() / "model").string(); }
  static TempDir* dir_;
};
TempDir* LogitsCli::dir_ = nullptr;

using test::read_npy;

TEST_F(LogitsCli, WritesEveryPositionAndTheScheduleDoesNotChangeThem) {
  TempDir out;
  const std::string tokens = "5 900 17 42 3 3 3 640 1 2";
  const auto whole = run_dsa(
      fmt::format("logits -m {} --tokens '{}' -o {}", model(), tokens, (out / "a.npy").string()));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const auto mixed = run_dsa(fmt::format(
      "logits -m {} --tokens '{}' --prefill 6 --chunk 4 --prefill-kernel absorbed -o {}", model(),
      tokens, (out / "b.npy").string()));
  ASSERT_EQ(mixed.exit_code, 0) << mixed.err;
  const auto a = read_npy(out / "a.npy", 10, 1024);
  const auto b = read_npy(out / "b.npy", 10, 1024);
  // Same kernels, different chunking: only GEMM batch sizes (summation order) differ, so rows
  // agree to a few bf16 rounding flips (test_forward.cc derives the bound: 2^-5 RMS).
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff2 += double(a[i] - b[i]) * double(a[i] - b[i]);
    ref2 += double(a[i]) * double(a[i]);
  }
  EXPECT_LT(std::sqrt(diff2 / ref2), 1.0 / 32);
  for (float v : a) ASSERT_TRUE(std::isfinite(v));
}

TEST_F(LogitsCli, GenerateIsGreedyAndRepeatable) {
  const std::string args = fmt::format("generate -m {} --tokens '1 2 3' -n 5", model());
  const auto first = run_dsa(args);
  const auto second = run_dsa(args);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(first.out, second.out);
  int count = 0;
  for (const char* p = first.out.c_str(); *p;) {
    char* end = nullptr;
    const long id = std::strtol(p, &end, 10);
    if (end == p) break;
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 1024);
    ++count;
    p = end;
  }
  EXPECT_GE(count, 1);
  EXPECT_LE(count, 5);
}

TEST_F(LogitsCli, BadInputIsAClearError) {
  TempDir out;
  const std::string npy = (out / "x.npy").string();
  struct Case {
    std::string args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {fmt::format("logits -m {} --tokens '1 2 1024' -o {}", model(), npy),
       "token 1024 (at index 2) is out of range"},
      {fmt::format("logits -m {} --tokens '1 two 3' -o {}", model(), npy),
       "'two' (item 2) is not a token id"},
      {fmt::format("logits -m {} --tokens '1 2' --prefill 3 -o {}", model(), npy),
       "--prefill 3 must be between 0 and the number of tokens (2)"},
      {fmt::format("logits -m {} --tokens '1 2' --attention fast -o {}", model(), npy),
       "unknown attention mode 'fast'"},
      {fmt::format("logits -m {} -o {}", model(), npy), "no prompt"},
      {fmt::format("logits -m {} --tokens '1' -o {}", (out / "missing").string(), npy), "missing"},
      {fmt::format("generate -m {} --tokens '1 2 3 4 5' -c 4", model()),
       "more than the context size of 4 tokens"},
      {fmt::format("generate -m {} --tokens '1' -c 4096", model()), "max_position_embeddings"},
  };
  for (const Case& c : cases) {
    const auto r = run_dsa(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
  }
}

}  // namespace
}  // namespace dsa

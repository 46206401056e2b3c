// `dsa bench train` end to end at tiny sizes: the JSON record and its FLOP accounting, the
// report's table and breakdown, clear errors for bad flags, and -- where Debian's python3-torch is
// installed -- the PyTorch eager baseline in the same run (same weights and batch: the first
// step's losses agree) and the baseline script's own check against the reference model. No
// speed is checked.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;
using test::run_dsa;

constexpr const char* kSmall =
    "bench train --init tiny --seq 12 --batch 2 --runs 2 --warmup 1 -t 2 --peak-gflops 400";

bool torch_available() {
  return std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") == 0;
}

TEST(CliBenchTrain, JsonRecordAndFlopAccounting) {
  const auto r = run_dsa(std::string(kSmall) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["architecture"], "DeepseekV32ForCausalLM");
  EXPECT_EQ(j["stage"], "dense");
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["tokens_per_step"], 24);
  // 6 x the active parameters (tiny: 1,345,536, see tests/perf/test_train_bench.cc) plus the
  // attention's 3 · 2 · H · (qk + v) FLOP per attended key, (12 + 1) / 2 keys per row, 2 layers.
  EXPECT_EQ(j["active_params"], 1345536);
  EXPECT_DOUBLE_EQ(j["matmul_flop_per_token"].get<double>(), 6.0 * 1345536);
  EXPECT_DOUBLE_EQ(j["attention_flop_per_token"].get<double>(), 3.0 * 2 * 4 * 128 * 6.5 * 2);
  EXPECT_DOUBLE_EQ(
      j["flop_per_token"].get<double>(),
      j["matmul_flop_per_token"].get<double>() + j["attention_flop_per_token"].get<double>());
  EXPECT_DOUBLE_EQ(j["peak_fp32_gflops"].get<double>(), 400.0);  // --peak-gflops
  EXPECT_EQ(j["peak_measured"], false);
  const json& d = j["dsa"];
  EXPECT_EQ(d["step_seconds"].size(), 2u);
  EXPECT_EQ(d["losses"].size(), 3u);  // the warm-up step too
  for (const json& loss : d["losses"]) EXPECT_TRUE(std::isfinite(loss.get<double>()));
  // A random tiny model starts near log(vocab) = log(1024) and goes down training on one batch.
  EXPECT_NEAR(d["losses"][0].get<double>(), std::log(1024.0), 1.0);
  EXPECT_LT(d["losses"][2].get<double>(), d["losses"][0].get<double>());
  // GFLOP/s is the step's FLOP over its median time.
  const double step_s = d["step_ms"].get<double>() * 1e-3;
  EXPECT_NEAR(d["gflops"].get<double>(), j["flop_per_token"].get<double>() * 24 / step_s * 1e-9,
              1e-9 * d["gflops"].get<double>());
  for (const char* field : {"forward", "forward_backward", "gemm", "gemm_gflops"}) {
    EXPECT_TRUE(d.contains(field)) << field;
  }
  EXPECT_FALSE(j.contains("torch"));
}

TEST(CliBenchTrain, TableAndStages) {
  const auto r = run_dsa(std::string(kSmall) + " --stage sparse");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* text :
       {"fp32 FMA peak 400.0 GFLOP/s (given)", "model tiny (DeepseekV32ForCausalLM): ",
        "stage sparse, 24 tokens per step", "| engine | threads | step ms | tokens/s | GFLOP/s |",
        "| dsa | 2 | ", "over 2 steps (after 1 warm-up)", "breakdown (medians, dsa): forward ",
        "matrix products alone"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << " in\n" << r.out;
  }
  EXPECT_NE(r.out.find(" + 0.199 M indexer"), std::string::npos) << r.out;  // 198,656 weights
  const auto quick = run_dsa(std::string(kSmall) + " --stage warmup --no-breakdown");
  ASSERT_EQ(quick.exit_code, 0) << quick.err;
  EXPECT_EQ(quick.out.find("breakdown"), std::string::npos) << quick.out;
}

TEST(CliBenchTrain, BadFlagsAreClearErrors) {
  const auto expect_error = [](const std::string& args, const std::string& message) {
    const auto r = run_dsa("bench train " + args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.err.find("dsa: error: " + message), std::string::npos) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args;
  };
  expect_error("--init tiny --seq 1", "--seq: 1 must be at least 2");
  expect_error("--init tiny --batch 0", "--batch: 0 must be at least 1");
  expect_error("--init tiny --runs 0", "--runs: 0 must be at least 1");
  expect_error("--init tiny --seq 4096",
               "bench train: --seq 4096 exceeds the model's max_position_embeddings (2048)");
  expect_error("--init tiny --stage fast", "--stage: 'fast' is not one of dense, warmup, sparse");
  expect_error("--init tiny-v3 --stage sparse", "bench train: the sparse and warmup stages need");
  expect_error("--init /nonexistent-model-dir", "bench train: cannot use --init");
  expect_error("--init tiny --source /nonexistent-tree", "--source: /nonexistent-tree has no");
  expect_error("--init tiny --torch-env A=1", "--torch-env: only with --torch");
  expect_error("--init tiny --torch --torch-env NOEQUALS",
               "--torch-env: 'NOEQUALS' is not NAME=VALUE");
  const auto r = run_dsa("bench -m /tmp train --init tiny");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("`bench train` takes --init"), std::string::npos) << r.err;
}

TEST(CliBenchTrain, TorchBaselineInTheSameRun) {
  if (!torch_available()) GTEST_SKIP() << "/usr/bin/python3 has no torch (python3-torch)";
  const auto r =
      run_dsa(std::string(kSmall) +
              " --torch --rounds 2 --no-breakdown --json --torch-env OMP_WAIT_POLICY=PASSIVE");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_TRUE(j.contains("torch")) << r.out;
  const json& t = j["torch"];
  EXPECT_EQ(t["threads"], 2);
  EXPECT_EQ(t["env"], json::parse(R"(["OMP_WAIT_POLICY=PASSIVE"])"));
  EXPECT_EQ(t["step_seconds"].size(), 4u);  // 2 rounds of 2 timed steps
  EXPECT_EQ(j["rounds"], 2);
  EXPECT_EQ(j["warmup"], 1);
  EXPECT_EQ(j["dsa"]["step_seconds"].size(), 4u);
  EXPECT_GT(j["speedup_vs_torch"].get<double>(), 0);
  // Same weights, same batch: the first step's loss agrees to fp32 accuracy (the two sum in
  // other orders; 1e-5 relative is ~100 ulp of a loss near 7).
  const double ours = j["dsa"]["losses"][0].get<double>(), theirs = t["losses"][0].get<double>();
  EXPECT_NEAR(ours, theirs, 1e-5 * std::fabs(theirs));
  // The steps after it train both (AdamW at the same settings): the losses fall alike.
  const double ours2 = j["dsa"]["losses"][1].get<double>(), theirs2 = t["losses"][1].get<double>();
  EXPECT_LT(ours2, ours);
  EXPECT_NEAR(ours2, theirs2, 1e-3 * std::fabs(theirs2));
}

TEST(CliBenchTrain, BaselineScriptMatchesTheReferenceModel) {
  if (!torch_available()) GTEST_SKIP() << "/usr/bin/python3 has no torch (python3-torch)";
  test::TempDir dir;
  const auto init = run_dsa(
      fmt::format("init-model --preset tiny --dtype bf16 --seed 3 -o '{}'", (dir / "m").string()));
  ASSERT_EQ(init.exit_code, 0) << init.err;
  test::write_text_file(dir / "tokens.json",
                        R"({"tokens": [[5, 900, 17, 3, 3, 1000, 42, 7, 8, 19, 600, 2],)"
                        R"( [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]})");
  // The batched model of the script against the reference's per-sequence batch_loss, float64.
  const std::string command = fmt::format(
      "/usr/bin/python3 '{}/scripts/bench_train_torch.py' --model '{}' --tokens '{}' --batch 2 "
      "--seq 12 --check > '{}' 2>&1",
      DSA_SOURCE_DIR, (dir / "m").string(), (dir / "tokens.json").string(),
      (dir / "out.txt").string());
  const int status = std::system(command.c_str());
  const std::string out = test::read_text_file(dir / "out.txt");
  ASSERT_EQ(status, 0) << out;
  const json j = json::parse(out.substr(out.rfind('{')));
  EXPECT_LT(j["relative_difference"].get<double>(), 1e-10) << out;
}

}  // namespace
}  // namespace dsa

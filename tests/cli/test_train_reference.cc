// The training engine against the independent PyTorch reference (tests/reference/
// train_reference.py, float64 autograd; goldens in tests/data/train_goldens, contract in
// tests/reference/README.md): `dsa init-model` rebuilds the golden's micro checkpoint (sha256
// checked), then `dsa grad` and the C++ step are compared with the goldens: losses, per-position
// losses, the selected keys (as sets, exactly), every gradient tensor, and ten AdamW steps.
//
// Tolerances. The engine computes in fp32 and the goldens are float64. The reference's own fp32
// run lands within 9e-7 of them (norm-relative per tensor; README); the engine sums in other
// orders (blocked GEMMs, flash-style attention), each fp32 sum of n terms carrying up to
// ~n·2^-24 relative error in the worst case and ~sqrt(n)·2^-24 typically. With n ≤ 256 here and
// a dozen such stages between the loss and the deepest gradient, 1e-5 norm-relative per tensor
// (and 1e-6 on losses, which pass through fewer stages) leaves margin without hiding a wrong
// formula: a single wrong term is O(1e-2) or more. Discrete choices (top-k, routing) must agree
// exactly; the goldens record their smallest margins (5e-4 and 1e-4), far above fp32 noise.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/safetensors.h"
#include "core/thread_pool.h"
#include "model/train_graph.h"
#include "model/train_parameters.h"
#include "support/test_util.h"
#include "train/adamw.h"
#include "train/data_sha256.h"
#include "train/optimizer_step.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

fs::path golden_path(const std::string& name) {
  return test::data_dir() / "train_goldens" / (name + ".safetensors");
}

std::vector<float> read_floats(const SafetensorsFile& file, const std::string& name) {
  const TensorView v = file.view(name);
  const float* p = v.data<float>();
  return {p, p + v.numel()};
}

std::vector<int32_t> read_ints(const SafetensorsFile& file, const std::string& name) {
  const TensorView v = file.view(name);
  const int32_t* p = v.data<int32_t>();
  return {p, p + v.numel()};
}

double norm_relative_error(std::span<const float> got, std::span<const float> want) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += std::pow(double(got[i]) - double(want[i]), 2);
    ref += std::pow(double(want[i]), 2);
  }
  return ref == 0.0 ? std::sqrt(diff) : std::sqrt(diff / ref);
}

constexpr double kGradTolerance = 1e-5;
constexpr double kLossTolerance = 1e-6;

// The micro checkpoint the goldens were made from, rebuilt once for the whole suite.
class TrainReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const SafetensorsFile golden(golden_path("micro_dense_lm"));
    const auto init = test::run_dsa(
        fmt::format("init-model --config {} --dtype bf16 --seed 7 -o {}",
                    (test::data_dir() / "train_goldens" / "micro_config.json").string(),
                    (dir_->path() / "model").string()));
    ASSERT_EQ(init.exit_code, 0) << init.err;
    // sha256 over the .safetensors files' bytes in sorted name order, as the goldens record it.
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir_->path() / "model")) {
      if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    std::string bytes;
    for (const fs::path& f : files) bytes += test::read_text_file(f);
    ASSERT_EQ(train::sha256_hex(bytes), golden.metadata().at("checkpoint_sha256"))
        << "dsa init-model no longer makes the checkpoint the goldens were made from: "
           "regenerate them (tests/reference/README.md)";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static fs::path model_dir() { return dir_->path() / "model"; }

  // Runs the C++ step on the golden's tokens and compares losses, selections and gradients.
  void compare_step(const std::string& name, const TrainStepOptions& options) {
    const SafetensorsFile golden(golden_path(name));
    ThreadPool pool(2);
    const ParameterBuffer params = load_parameters(model_dir(), pool);
    const std::vector<int32_t> tokens = read_ints(golden, "tokens");
    ParameterBuffer grads(params.shared_layout());
    TrainStepOptions o = options;
    o.record_topk = true;
    const TrainBatch batch{.tokens = tokens, .sequences = 1, .seq_len = int64_t(tokens.size())};
    const TrainStepResult r = train_step(params, batch, o, &grads, pool);
    const double want = std::stod(golden.metadata().at("loss"));
    const double got = options.lm_loss ? r.lm_loss + r.balance_loss : r.indexer_loss;
    EXPECT_NEAR(got, want, kLossTolerance * std::fabs(want)) << name << " loss";
    if (golden.find("token_losses")) {
      const std::vector<float> want_positions = read_floats(golden, "token_losses");
      for (size_t t = 0; t < want_positions.size(); ++t) {
        EXPECT_NEAR(r.position_losses[t], want_positions[t], 1e-5 * want_positions[t])
            << name << " position " << t;
      }
    }
    for (int64_t l = 0; l < params.layout().config().num_hidden_layers; ++l) {
      const std::string topk = fmt::format("layers.{}.indexer.topk", l);
      if (golden.find(topk)) {
        const std::vector<int32_t> want_topk = read_ints(golden, topk);
        ASSERT_EQ(r.topk[static_cast<size_t>(l)].size(), want_topk.size()) << name << " " << topk;
        const int64_t k = params.layout().config().index_topk;
        for (size_t row = 0; row < want_topk.size() / static_cast<size_t>(k); ++row) {
          const std::set<int32_t> a(r.topk[static_cast<size_t>(l)].begin() + row * k,
                                    r.topk[static_cast<size_t>(l)].begin() + (row + 1) * k);
          const std::set<int32_t> b(want_topk.begin() + row * k, want_topk.begin() + (row + 1) * k);
          EXPECT_EQ(a, b) << name << " " << topk << " row " << row;
        }
      }
      const std::string row_kl = fmt::format("layers.{}.indexer.row_kl", l);
      if (golden.find(row_kl)) {
        const std::vector<float> want_kl = read_floats(golden, row_kl);
        ASSERT_GT(r.indexer_row_kl.size(), static_cast<size_t>(l));
        for (size_t t = 0; t < want_kl.size(); ++t) {
          EXPECT_NEAR(r.indexer_row_kl[static_cast<size_t>(l)][t], want_kl[t],
                      1e-5 * want_kl[t] + 1e-9)
              << name << " " << row_kl << " row " << t;
        }
      }
    }
    int compared = 0;
    for (const TrainTensor& t : params.layout().tensors()) {
      const std::string key = "grad." + t.spec.name;
      if (!golden.find(key)) continue;
      ++compared;
      const std::vector<float> want_grad = read_floats(golden, key);
      EXPECT_LE(norm_relative_error(grads.tensor(t), want_grad), kGradTolerance)
          << name << " " << key;
    }
    EXPECT_GE(compared, 10) << name;
  }

  static test::TempDir* dir_;
};
test::TempDir* TrainReference::dir_ = nullptr;

TEST_F(TrainReference, DenseLm) {
  compare_step("micro_dense_lm", {.attention = AttentionMode::kDense});
}

TEST_F(TrainReference, SparseLm) {
  compare_step("micro_sparse_lm", {.attention = AttentionMode::kSparse});
}

TEST_F(TrainReference, WarmupIndexerLoss) {
  compare_step("micro_indexer",
               {.attention = AttentionMode::kDense, .lm_loss = false, .indexer_loss = true});
}

TEST_F(TrainReference, SparseIndexerLoss) {
  compare_step("micro_sparse_indexer",
               {.attention = AttentionMode::kSparse, .lm_loss = false, .indexer_loss = true});
}

TEST_F(TrainReference, BalanceLoss) {
  const SafetensorsFile golden(golden_path("micro_balance"));
  compare_step("micro_balance",
               {.attention = AttentionMode::kDense,
                .balance_alpha = std::stof(golden.metadata().at("balance_alpha"))});
}

// `dsa grad` writes what the C++ step computes, under the checkpoint names, with the loss.
TEST_F(TrainReference, GradCommandMatchesTheGolden) {
  const SafetensorsFile golden(golden_path("micro_sparse_lm"));
  const fs::path out = dir_->path() / "grad.safetensors";
  const auto run = test::run_dsa(
      fmt::format("grad -m {} --tokens \"{}\" --attention sparse -t 2 -o {}", model_dir().string(),
                  golden.metadata().at("tokens"), out.string()));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const SafetensorsFile grads(out);
  const double want = std::stod(golden.metadata().at("loss"));
  EXPECT_NEAR(std::stod(grads.metadata().at("loss")), want, kLossTolerance * want);
  int compared = 0;
  for (const TensorInfo& info : grads.tensors()) {
    ASSERT_EQ(info.dtype, DType::F32) << info.name;
    const std::string key = "grad." + info.name;
    ASSERT_NE(golden.find(key), nullptr) << info.name << " is not a trainable parameter";
    EXPECT_LE(norm_relative_error(read_floats(grads, info.name), read_floats(golden, key)),
              kGradTolerance)
        << info.name;
    ++compared;
  }
  EXPECT_EQ(compared, 50);  // every trainable tensor of the micro model
}

// Ten AdamW steps overfitting one batch, step by step, as llm.c's test_gpt2 does.
TEST_F(TrainReference, TenAdamWStepsMatchStepByStep) {
  const SafetensorsFile golden(golden_path("micro_adamw"));
  const auto& meta = golden.metadata();
  ThreadPool pool(2);
  ParameterBuffer params = load_parameters(model_dir(), pool);
  ParameterBuffer grads(params.shared_layout());
  train::AdamW optimizer(params.shared_layout(),
                         {.beta1 = std::stod(meta.at("beta1")),
                          .beta2 = std::stod(meta.at("beta2")),
                          .eps = std::stod(meta.at("eps")),
                          .weight_decay = std::stod(meta.at("weight_decay"))});
  const std::vector<int32_t> tokens = read_ints(golden, "tokens");
  const int64_t steps = std::stoll(meta.at("steps"));
  const train::StepSettings settings{.graph = {.attention = AttentionMode::kDense},
                                     .schedule = {.lr = std::stod(meta.at("lr")),
                                                  .min_lr = std::stod(meta.at("min_lr")),
                                                  .warmup = std::stoll(meta.at("warmup")),
                                                  .steps = steps},
                                     .clip = std::stod(meta.at("clip")),
                                     .bias_update_rate = std::stod(meta.at("router_bias_rate"))};
  const std::vector<float> losses = read_floats(golden, "losses");
  const std::vector<float> norms = read_floats(golden, "grad_norms");
  const std::vector<float> lrs = read_floats(golden, "lrs");
  const TrainBatch batch{.tokens = tokens, .sequences = 2, .seq_len = int64_t(tokens.size()) / 2};
  for (int64_t step = 0; step < steps; ++step) {
    const train::StepStats s =
        train::run_optimizer_step(params, grads, optimizer, {&batch, 1}, settings, step, pool);
    // Each step's loss inherits the previous updates' rounding: allow it to grow with the step.
    EXPECT_NEAR(s.loss, losses[static_cast<size_t>(step)], 1e-5 * losses[static_cast<size_t>(step)])
        << "step " << step;
    EXPECT_NEAR(s.grad_norm, norms[static_cast<size_t>(step)],
                1e-4 * norms[static_cast<size_t>(step)])
        << "step " << step;
    EXPECT_NEAR(s.lr, lrs[static_cast<size_t>(step)], 1e-7 * lrs[static_cast<size_t>(step)])
        << "step " << step;
  }
  for (const TensorInfo& info : golden.tensors()) {
    if (info.name.rfind("final.", 0) != 0) continue;
    const std::string name = info.name.substr(6);
    const std::vector<float> want = read_floats(golden, info.name);
    const float* got = params.data(name);
    EXPECT_LE(norm_relative_error({got, want.size()}, want), 1e-4) << name;
  }
}

}  // namespace
}  // namespace dsa

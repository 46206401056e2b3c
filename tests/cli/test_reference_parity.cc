// Parity with the independent Python reference (tests/reference/, goldens in
// tests/data/model_goldens): for each golden case, `dsa init-model` rebuilds the same checkpoint
// (its sha256 is checked against the golden's), `dsa logits --dump` runs the same schedule, and
// every named intermediate is compared in the order the forward pass computes them, so a failure
// names the first divergence.
//
// `dsa logits` runs with the attention kernels DeepSeek's reference uses (--prefill-kernel mha:
// MHA mode for prefill, absorbed for decode) and, by default, their scalar versions that round
// as it does; the two implementations then compute the same bf16/FP8 tensors at the
// same rounding points. The fast kernels, which keep scores and probabilities in fp32, are
// compared up to the first attention output, after which FP8 re-quantization and top-k/MoE
// near-ties on these random tiny models amplify any difference (tests/model/test_forward.cc
// checks the fast paths against each other).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>

#include "core/safetensors.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::TempDir;

std::string shell(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  std::array<char, 256> buffer;
  while (fgets(buffer.data(), int(buffer.size()), pipe)) out += buffer.data();
  pclose(pipe);
  return out;
}

std::vector<float> floats(const TensorView& v) {
  const float* p = v.data<float>();
  return {p, p + v.numel()};
}

// Mean over rows of |A ∩ B| / |A ∪ B| for index sets (-1 entries ignored).
double mean_jaccard(const TensorView& a, const TensorView& b) {
  const int64_t rows = a.shape()[0], cols = a.shape()[1];
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    std::set<int32_t> sa, sb;
    for (int64_t c = 0; c < cols; ++c) {
      if (a.data<int32_t>()[r * cols + c] >= 0) sa.insert(a.data<int32_t>()[r * cols + c]);
      if (b.data<int32_t>()[r * cols + c] >= 0) sb.insert(b.data<int32_t>()[r * cols + c]);
    }
    std::set<int32_t> both;
    for (int32_t x : sa) both.insert(x);
    for (int32_t x : sb) both.insert(x);
    size_t common = 0;
    for (int32_t x : sa) common += sb.count(x);
    total += both.empty() ? 1.0 : double(common) / double(both.size());
  }
  return total / double(rows);
}

// The names a forward pass produces, in the order it computes them.
std::vector<std::string> computation_order(int layers) {
  std::vector<std::string> names;
  for (int l = 0; l < layers; ++l) {
    const std::string p = fmt::format("layers.{}.", l);
    for (const char* n : {"attn_norm", "q_latent", "q", "kv_latent", "k_pe", "indexer.key",
                          "indexer.weights", "indexer.scores", "indexer.topk", "attn_output",
                          "attn", "ffn_norm", "moe.expert_ids", "moe.expert_weights", "ffn"}) {
      names.push_back(p + n);
    }
  }
  names.push_back("norm");
  names.push_back("logits");
  return names;
}

// Tolerances. With the reference attention kernels, the engine and the reference differ only in
// summation order (fp32 SIMD/BLAS vs float64). That moves a bf16 result by one ulp (2^-8
// relative) only when the exact value lies within the fp32 summation error of a rounding
// boundary, so most tokens agree to far below one ulp; rarely such a flip moves an FP8 activation
// code (2^-4 relative for that element) or an MoE choice downstream, which shifts that token
// further. Hence: per token, the RMS difference relative to the token's RMS is below 2^-8 for at
// least 90% of the tokens and below 2^-5 for every token.
constexpr double kTypicalTokenTolerance = 1.0 / 256;
constexpr double kAnyTokenTolerance = 1.0 / 32;
constexpr double kTypicalTokenFraction = 0.9;
constexpr double kMinJaccard = 0.95;  // top-k and expert sets: near-tie swaps only
// The fast attention kernels keep scores and probabilities in fp32 where the reference rounds
// the score, the scaled score and the probability to bf16 (2^-9 relative each): the attention
// output differs by about 3 * 2^-9 < 2^-7 in RMS.
constexpr double kFastAttentionTolerance = 1.0 / 128;

struct TokenMetrics {
  double worst = 0;               // largest per-token relative RMS difference
  double typical_fraction = 1.0;  // fraction of tokens within kTypicalTokenTolerance
  bool same_infinities = true;
  double rms_relative = 0;  // over the whole tensor
};

TokenMetrics per_token(const TensorView& ours, const TensorView& theirs) {
  const std::vector<float> a = floats(ours), b = floats(theirs);
  const int64_t tokens = theirs.shape()[0];
  const size_t row = a.size() / size_t(tokens);
  TokenMetrics m;
  int64_t typical = 0;
  double diff_all = 0, ref_all = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    double diff2 = 0, ref2 = 0;
    for (size_t i = size_t(t) * row; i < size_t(t + 1) * row; ++i) {
      if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
        m.same_infinities &= a[i] == b[i];
        continue;
      }
      diff2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      ref2 += double(b[i]) * b[i];
    }
    diff_all += diff2;
    ref_all += ref2;
    const double relative = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
    m.worst = std::max(m.worst, relative);
    typical += relative <= kTypicalTokenTolerance;
  }
  m.typical_fraction = double(typical) / double(tokens);
  m.rms_relative = ref_all > 0 ? std::sqrt(diff_all / ref_all) : std::sqrt(diff_all);
  return m;
}

struct GoldenRun {
  std::unique_ptr<SafetensorsFile> golden;
  std::unique_ptr<SafetensorsFile> dump;
};

// Rebuilds the golden's checkpoint and runs its schedule with `flags`.
GoldenRun run_golden(const std::string& name, const std::string& flags, const TempDir& dir) {
  GoldenRun run;
  run.golden = std::make_unique<SafetensorsFile>(test::data_dir() / "model_goldens" /
                                                 (name + ".safetensors"));
  const auto& meta = run.golden->metadata();
  const auto model = dir / "model";
  if (!std::filesystem::exists(model)) {
    const auto init = test::run_dsa(fmt::format("init-model --preset {} --seed {} --dtype {} -o {}",
                                                meta.at("preset"), meta.at("seed"),
                                                meta.at("dtype"), model.string()));
    EXPECT_EQ(init.exit_code, 0) << init.err;
    const std::string sha = shell(fmt::format(
        "cat $(ls {}/*.safetensors | LC_ALL=C sort) | sha256sum | cut -d' ' -f1", model.string()));
    EXPECT_EQ(sha.substr(0, 64), meta.at("checkpoint_sha256"))
        << "dsa init-model no longer makes the checkpoint the goldens were made from: "
           "regenerate them (tests/reference/README.md)";
  }
  const TensorView tokens = run.golden->view("tokens");
  std::string ids;
  for (int64_t i = 0; i < tokens.numel(); ++i) ids += fmt::format("{} ", tokens.data<int32_t>()[i]);
  const auto dump = dir / "dump.safetensors";
  const auto result = test::run_dsa(fmt::format(
      "logits -m {} --tokens '{}' --prefill {} --chunk {} --attention {} {} -t 2 -o {} --dump {}",
      model.string(), ids, meta.at("prefill"), meta.at("chunk"), meta.at("attention"), flags,
      (dir / "logits.npy").string(), dump.string()));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  if (result.exit_code == 0) run.dump = std::make_unique<SafetensorsFile>(dump);
  return run;
}

class ReferenceParity : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceParity, MatchesTheGoldensWithReferenceAttention) {
  TempDir dir;
  const GoldenRun run = run_golden(GetParam(), "--prefill-kernel mha", dir);
  ASSERT_TRUE(run.dump);
  const bool dense = run.golden->metadata().at("attention") == "dense";
  int compared = 0;
  for (const std::string& name : computation_order(8)) {
    if (!run.golden->find(name)) continue;
    // Dense attention never scores keys, so only the indexer's key cache is there to compare.
    if (dense && name.find("indexer.") != std::string::npos && !name.ends_with("indexer.key")) {
      continue;
    }
    ASSERT_TRUE(run.dump->find(name)) << "the engine did not dump " << name;
    const TensorView ours = run.dump->view(name);
    const TensorView theirs = run.golden->view(name);
    ASSERT_EQ(ours.shape(), theirs.shape()) << name;
    ++compared;
    if (theirs.dtype() == DType::I32) {  // top-k positions, MoE experts: compared as sets
      const double jaccard = mean_jaccard(ours, theirs);
      ASSERT_GE(jaccard, kMinJaccard) << "first divergence: " << name;
      continue;
    }
    const TokenMetrics m = per_token(ours, theirs);
    ASSERT_TRUE(m.same_infinities) << "first divergence: " << name << " (masked entries differ)";
    ASSERT_GE(m.typical_fraction, kTypicalTokenFraction) << "first divergence: " << name;
    ASSERT_LE(m.worst, kAnyTokenTolerance) << "first divergence: " << name;
  }
  EXPECT_GE(compared, 2);  // at least the final norm and the logits
}

// The goldens that hold every intermediate.
class FastAttentionParity : public ::testing::TestWithParam<const char*> {};

TEST_P(FastAttentionParity, MatchesUpToTheFirstAttentionOutput) {
  TempDir dir;
  const GoldenRun run = run_golden(GetParam(), "--prefill-kernel mha --fast-attention", dir);
  ASSERT_TRUE(run.dump);
  ASSERT_TRUE(run.golden->find("layers.0.attn_output"));
  for (const std::string& name : computation_order(1)) {
    if (!run.golden->find(name) || run.golden->view(name).dtype() == DType::I32) continue;
    const TokenMetrics m = per_token(run.dump->view(name), run.golden->view(name));
    if (name == "layers.0.attn_output") {
      EXPECT_LE(m.rms_relative, kFastAttentionTolerance);
      return;
    }
    ASSERT_GE(m.typical_fraction, kTypicalTokenFraction) << "first divergence: " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, ReferenceParity,
                         ::testing::Values("tiny_fp8_sparse_chunked", "tiny_fp8_sparse_whole",
                                           "tiny_bf16_sparse_chunked", "tiny_fp8_dense",
                                           "tiny_v3_fp8"));

INSTANTIATE_TEST_SUITE_P(Goldens, FastAttentionParity,
                         ::testing::Values("tiny_fp8_sparse_chunked", "tiny_bf16_sparse_chunked"));

TEST(ReferenceParity, EveryGoldenIsTested) {
  std::set<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(test::data_dir() / "model_goldens")) {
    if (e.path().extension() == ".safetensors") files.insert(e.path().stem().string());
  }
  EXPECT_EQ(files,
            (std::set<std::string>{"tiny_fp8_sparse_chunked", "tiny_fp8_sparse_whole",
                                   "tiny_bf16_sparse_chunked", "tiny_fp8_dense", "tiny_v3_fp8"}));
}

}  // namespace
}  // namespace dsa

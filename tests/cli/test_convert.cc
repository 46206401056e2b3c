// `dsa convert` end to end: FP8 → bf16 gives exactly the weights inference and training load
// from the FP8 checkpoint (same `dsa grad` bytes), bf16 → FP8 gives a checkpoint `dsa inspect`
// accepts whose logits stay close to the bf16 model's, the folder's other files come along, and
// bad requests are clear errors.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "support/test_util.h"

namespace dsa {
namespace {

using test::run_dsa;
using test::TempDir;

const char* const kTokens = "5 900 17 42 3 3 640 1 2 77 300 12";

TEST(ConvertCli, Fp8ToBf16KeepsWhatTheFp8ModelComputes) {
  TempDir dir;
  const auto fp8 = dir / "fp8", bf16 = dir / "bf16";
  ASSERT_EQ(run_dsa(fmt::format("init-model --preset tiny --seed 3 -o {}", fp8.string())).exit_code,
            0);
  test::write_text_file(fp8 / "generation_config.json", "{\"do_sample\": false}\n");
  const auto r = run_dsa(fmt::format("convert -m {} -o {} --to bf16", fp8.string(), bf16.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("converted to bf16"), std::string::npos) << r.out;
  EXPECT_EQ(test::read_text_file(bf16 / "generation_config.json"), "{\"do_sample\": false}\n");
  EXPECT_EQ(test::read_text_file(bf16 / "config.json").find("quantization_config"),
            std::string::npos);
  const auto inspect = run_dsa("inspect " + bf16.string());
  ASSERT_EQ(inspect.exit_code, 0) << inspect.out << inspect.err;
  EXPECT_NE(inspect.out.find("bf16"), std::string::npos);
  for (const auto& model : {fp8, bf16}) {
    const auto g = run_dsa(fmt::format("grad -m {} --tokens '{}' -o {}", model.string(), kTokens,
                                       (model / "grad.safetensors").string()));
    ASSERT_EQ(g.exit_code, 0) << g.err;
  }
  EXPECT_TRUE(test::read_text_file(fp8 / "grad.safetensors") ==
              test::read_text_file(bf16 / "grad.safetensors"))
      << "the bf16 model's loss or gradients differ from the FP8 model's";
}

TEST(ConvertCli, Bf16ToFp8IsCloseAndRuns) {
  TempDir dir;
  const auto bf16 = dir / "bf16", fp8 = dir / "fp8";
  ASSERT_EQ(
      run_dsa(fmt::format("init-model --preset tiny --dtype bf16 --seed 5 -o {}", bf16.string()))
          .exit_code,
      0);
  const auto r = run_dsa(fmt::format("convert -m {} -o {} --to fp8", bf16.string(), fp8.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto inspect = run_dsa("inspect " + fp8.string());
  ASSERT_EQ(inspect.exit_code, 0) << inspect.out << inspect.err;
  EXPECT_NE(inspect.out.find("fp8 e4m3, 128x128 blocks"), std::string::npos) << inspect.out;
  for (const auto& model : {bf16, fp8}) {
    const auto l = run_dsa(fmt::format("logits -m {} --tokens '{}' -o {}", model.string(), kTokens,
                                       (model / "logits.npy").string()));
    ASSERT_EQ(l.exit_code, 0) << l.err;
  }
  const std::vector<float> a = test::read_npy(bf16 / "logits.npy", 12, 1024);
  const std::vector<float> b = test::read_npy(fp8 / "logits.npy", 12, 1024);
  ASSERT_EQ(a.size(), b.size());
  // e4m3 keeps 4 significant bits of every weight (relative error up to 2^-4) and the FP8 model
  // also quantizes its activations, so the logits move, but by much less than they vary.
  double diff = 0.0, spread = 0.0, mean = 0.0;
  for (float x : a) mean += x / double(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    diff += std::pow(double(a[i]) - double(b[i]), 2);
    spread += std::pow(double(a[i]) - mean, 2);
  }
  EXPECT_GT(diff, 0.0) << "nothing was quantized";
  EXPECT_LT(std::sqrt(diff / spread), 0.25) << "FP8 logits are far from the bf16 ones";
}

TEST(ConvertCli, BadRequestsAreClearErrors) {
  TempDir dir;
  const auto model = dir / "m";
  ASSERT_EQ(
      run_dsa(fmt::format("init-model --preset tiny --dtype bf16 -o {}", model.string())).exit_code,
      0);
  auto r = run_dsa(fmt::format("convert -m {} -o {} --to fp8", model.string(), model.string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is the input folder"), std::string::npos) << r.err;

  std::filesystem::create_directories(dir / "full");
  test::write_text_file(dir / "full" / "note.txt", "keep me");
  r = run_dsa(fmt::format("convert -m {} -o {} --to fp8", model.string(), (dir / "full").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not empty"), std::string::npos) << r.err;

  r = run_dsa(fmt::format("convert -m {} -o {} --to fp16", model.string(), (dir / "x").string()));
  EXPECT_EQ(r.exit_code, 1);

  // A width FP8 cannot quantize (activations go in groups of 128).
  TempDir odd;
  const auto odd_model = odd / "m";
  std::string config = test::read_text_file(model / "config.json");
  const size_t at = config.find("\"intermediate_size\": 512");
  ASSERT_NE(at, std::string::npos) << config;
  config.replace(at, 24, "\"intermediate_size\": 500");
  test::write_text_file(odd / "config.json", config);
  ASSERT_EQ(run_dsa(fmt::format("init-model --config {} --dtype bf16 -o {}",
                                (odd / "config.json").string(), odd_model.string()))
                .exit_code,
            0);
  r = run_dsa(
      fmt::format("convert -m {} -o {} --to fp8", odd_model.string(), (odd / "out").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("intermediate_size"), std::string::npos) << r.err;

  // A checkpoint that lacks a tensor its config implies.
  const auto partial = dir / "partial";
  std::filesystem::create_directories(partial);
  std::filesystem::copy_file(model / "config.json", partial / "config.json");
  const auto one =
      run_dsa(fmt::format("init-model --preset tiny-v3 --dtype bf16 -o {}", (dir / "v3").string()));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  std::filesystem::copy_file(dir / "v3" / "model.safetensors", partial / "model.safetensors");
  r = run_dsa(
      fmt::format("convert -m {} -o {} --to fp8", partial.string(), (dir / "out2").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsa

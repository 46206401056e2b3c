// `dsa init-model`: the tiny checkpoint it writes (names, shapes, dtypes against the hand-derived
// list; config.json; metadata), determinism, sharding, BF16, dry runs and flag errors.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "model/config.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::run_dsa;
using test::TempDir;

std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

std::vector<std::string> expected_tiny_tensors() {
  std::ifstream in(test::data_dir() / "model" / "tiny_tensors.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  return lines;
}

std::vector<std::string> checkpoint_lines(const Checkpoint& ckpt) {
  std::vector<std::string> lines;
  for (const std::string& name : ckpt.tensor_names()) {
    const TensorInfo& info = ckpt.info(name);
    std::string dims;
    for (int64_t d : info.shape.dims()) dims += (dims.empty() ? "" : ",") + std::to_string(d);
    lines.push_back(name + " " + std::string(dtype_name(info.dtype)) + " " + dims);
  }
  return lines;  // tensor_names() is sorted
}

TEST(CliInitModel, TinyCheckpointHasTheDeepseekLayout) {
  TempDir dir;
  const auto r = run_dsa("init-model --preset tiny --seed 1 -o " + quoted(dir / "tiny"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("190 tensors"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");  // no progress bar when stderr is not a terminal

  const Checkpoint ckpt(dir / "tiny");
  EXPECT_EQ(checkpoint_lines(ckpt), expected_tiny_tensors());
  ASSERT_EQ(ckpt.files().size(), 1u);
  EXPECT_EQ(ckpt.files()[0].path().filename(), "model.safetensors");
  EXPECT_EQ(ckpt.files()[0].metadata().at("format"), "pt");

  const ModelConfig config = load_model_config(dir / "tiny");
  EXPECT_EQ(config.architecture, Architecture::kDeepseekV32);
  EXPECT_EQ(config.hidden_size, 256);
  EXPECT_EQ(config.index_topk, 16);
  const auto json = nlohmann::json::parse(test::read_text_file(dir / "tiny" / "config.json"));
  EXPECT_EQ(json["quantization_config"]["weight_block_size"], nlohmann::json({128, 128}));
  EXPECT_EQ(json["architectures"], nlohmann::json({"DeepseekV32ForCausalLM"}));
}

TEST(CliInitModel, DeterministicForASeed) {
  TempDir dir;
  for (const char* run : {"a", "b"}) {
    ASSERT_EQ(run_dsa("init-model --preset tiny -s 42 -t 1 -o " + quoted(dir / run)).exit_code, 0);
  }
  ASSERT_EQ(run_dsa("init-model --preset tiny -s 43 -o " + quoted(dir / "c")).exit_code, 0);
  const auto bytes = [&](const char* run) {
    return test::read_text_file(dir / run / "model.safetensors");
  };
  EXPECT_EQ(bytes("a"), bytes("b"));
  EXPECT_NE(bytes("a"), bytes("c"));
  EXPECT_EQ(test::read_text_file(dir / "a" / "config.json"),
            test::read_text_file(dir / "c" / "config.json"));
}

TEST(CliInitModel, ShardsAndBf16) {
  TempDir dir;
  // tiny in BF16 is ~7.5 MiB: 1 MiB shards give several files plus the index.
  const auto r =
      run_dsa("init-model --preset tiny --dtype bf16 --max-shard-mib 1 -o " + quoted(dir / "m"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "m" / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "m" / "model.safetensors"));
  const Checkpoint ckpt(dir / "m");
  EXPECT_GT(ckpt.files().size(), 3u);
  std::vector<std::string> expected;
  for (std::string line : expected_tiny_tensors()) {
    if (line.find("weight_scale_inv") != std::string::npos) continue;
    const size_t at = line.find(" F8_E4M3 ");
    if (at != std::string::npos) line.replace(at, 9, " BF16 ");
    expected.push_back(line);
  }
  EXPECT_EQ(checkpoint_lines(ckpt), expected);
  const auto json = nlohmann::json::parse(test::read_text_file(dir / "m" / "config.json"));
  EXPECT_FALSE(json.contains("quantization_config"));
}

TEST(CliInitModel, DryRunOf671BWritesOnlyTheConfig) {
  TempDir dir;
  const auto r = run_dsa("init-model --preset v3.2-671b --dry-run -o " + quoted(dir / "big"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("dry run"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("DeepseekV32ForCausalLM"), std::string::npos) << r.out;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "big")) {
    files.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(files, std::vector<std::string>{"config.json"});
  EXPECT_EQ(load_model_config(dir / "big").num_hidden_layers, 61);
}

TEST(CliInitModel, FromConfigFile) {
  TempDir dir;
  ASSERT_EQ(run_dsa("init-model --preset tiny-v3 --dry-run -o " + quoted(dir / "cfg")).exit_code,
            0);
  const auto r = run_dsa("init-model --config " + quoted(dir / "cfg" / "config.json") +
                         " --dtype bf16 -o " + quoted(dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Checkpoint ckpt(dir / "out");
  EXPECT_FALSE(ckpt.contains("model.layers.0.self_attn.indexer.wk.weight"));
  EXPECT_EQ(ckpt.info("model.layers.0.self_attn.q_b_proj.weight").dtype, DType::BF16);
}

TEST(CliInitModel, ListsPresets) {
  const auto r = run_dsa("init-model --list-presets");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"tiny", "tiny-v3", "small", "medium", "v3.2-671b", "v3-671b"}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
  }
}

TEST(CliInitModel, RefusesANonEmptyFolderWithoutForce) {
  TempDir dir;
  test::write_text_file(dir / "notes.txt", "keep");
  const auto r = run_dsa("init-model --preset tiny -o " + quoted(dir.path()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("folder is not empty (use --force"), std::string::npos) << r.err;
  EXPECT_EQ(run_dsa("init-model --preset tiny --force -o " + quoted(dir.path())).exit_code, 0);
  EXPECT_EQ(test::read_text_file(dir / "notes.txt"), "keep");
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors"));
}

TEST(CliInitModel, FlagErrors) {
  TempDir dir;
  const auto expect_error = [](const std::string& args, const std::string& message) {
    const auto r = run_dsa(args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\n" << r.err;
  };
  expect_error("init-model --preset tiny", "-o/--output DIR is required");
  expect_error("init-model -o " + quoted(dir / "x"), "exactly one of --preset NAME or --config");
  expect_error("init-model --preset huge -o " + quoted(dir / "x"), "unknown model preset 'huge'");
  expect_error("init-model --preset tiny --dtype fp4 -o " + quoted(dir / "x"), "--dtype");
  expect_error("init-model --config " + quoted(dir / "none.json") + " -o " + quoted(dir / "x"),
               "cannot open model config");
  test::write_text_file(dir / "bad.json", R"({"architectures": ["DeepseekV3ForCausalLM"]})");
  expect_error("init-model --config " + quoted(dir / "bad.json") + " -o " + quoted(dir / "x"),
               "missing required key 'vocab_size'");
}

}  // namespace
}  // namespace dsa

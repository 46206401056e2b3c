// `dsa inspect`: the summary of a tiny checkpoint, its JSON form, the 671B layout from a config
// alone, and the report of a checkpoint that does not match its config.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;
using test::run_dsa;
using test::TempDir;

std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

class CliInspect : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const auto r = run_dsa("init-model --preset tiny -o " + quoted(tiny()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path tiny() { return *dir_ / "tiny"; }

  // A copy of the tiny checkpoint with `edit` applied to the tensor list: it may drop a tensor
  // (return false), or rename, reshape or retype it (the bytes are then zeros).
  static std::filesystem::path edited_copy(
      const std::string& name, const std::function<bool(std::string&, DType&, Shape&)>& edit) {
    const std::filesystem::path out = *dir_ / name;
    const Checkpoint ckpt(tiny());
    SafetensorsWriter writer;
    for (const std::string& tensor : ckpt.tensor_names()) {
      std::string new_name = tensor;
      const TensorInfo& info = ckpt.info(tensor);
      DType dtype = info.dtype;
      Shape shape = info.shape;
      if (!edit(new_name, dtype, shape)) continue;
      if (new_name == tensor && dtype == info.dtype && shape == info.shape) {
        writer.add(tensor, ckpt.view(tensor));
      } else {
        writer.add(new_name, dtype, shape, [](std::span<uint8_t> bytes) {
          std::fill(bytes.begin(), bytes.end(), uint8_t(0));
        });
      }
    }
    writer.write_checkpoint(out, uint64_t(1) << 40);
    std::filesystem::copy_file(tiny() / "config.json", out / "config.json");
    return out;
  }

  static TempDir* dir_;
};
TempDir* CliInspect::dir_ = nullptr;

TEST_F(CliInspect, SummarizesTheTinyCheckpoint) {
  const auto r = run_dsa("inspect " + quoted(tiny()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* text :
       {"DeepseekV32ForCausalLM", "layers        2 (1 dense + 1 MoE) + 1 MTP",
        "indexer       4 heads x 128, top-k 16", "YaRN factor 4",
        "model.layers.*.mlp.experts.*.down_proj.weight", "routed_experts", "activated/token",
        "F8_E4M3", "check: every tensor matches config.json"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  const auto all = run_dsa("inspect --tensors " + quoted(tiny()));
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_NE(all.out.find("model.layers.2.mlp.experts.7.up_proj.weight_scale_inv"),
            std::string::npos);
}

TEST_F(CliInspect, JsonAgreesWithTheFiles) {
  const auto r = run_dsa("inspect --json -c 1000 " + quoted(tiny()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json out = json::parse(r.out);
  EXPECT_TRUE(out["weights_present"].get<bool>());
  EXPECT_EQ(out["mismatches"], json::array());
  // Per layer: 128 FP8 latent + 4 B scale + 64 BF16 rope (128 B) = 260, plus 128 + 4 indexer.
  EXPECT_EQ(out["kv_cache"]["latent_bytes_per_token_layer"], 260);
  EXPECT_EQ(out["kv_cache"]["indexer_bytes_per_token_layer"], 132);
  EXPECT_EQ(out["kv_cache"]["bytes_per_token"], 2 * 392);
  EXPECT_EQ(out["kv_cache"]["bytes_at_context"], 2 * 392 * 1000);
  // Weight bytes equal the data in the file: its size minus the 8-byte length and the header.
  const Checkpoint ckpt(tiny());
  uint64_t data_bytes = 0;
  int64_t count = 0;
  for (const std::string& name : ckpt.tensor_names()) data_bytes += ckpt.info(name).nbytes();
  for (const json& row : out["tensors"]) count += row["count"].get<int64_t>();
  EXPECT_EQ(out["weight_bytes"]["total"], data_bytes);
  EXPECT_EQ(count, 190);
  int64_t by_module = 0;
  for (const auto& [module, n] : out["parameters"]["by_module"].items())
    by_module += n.get<int64_t>();
  EXPECT_EQ(by_module, out["parameters"]["main_model"].get<int64_t>());
}

TEST_F(CliInspect, DescribesA671BLayoutFromTheConfigAlone) {
  TempDir dir;
  ASSERT_EQ(run_dsa("init-model --preset v3.2-671b --dry-run -o " + quoted(dir / "big")).exit_code,
            0);
  const auto r = run_dsa("inspect --json -c 131072 " + quoted(dir / "big"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json out = json::parse(r.out);
  EXPECT_FALSE(out["weights_present"].get<bool>());
  EXPECT_EQ(out["kv_cache"]["bytes_per_token"], 48068);  // 61 x (656 + 132), dsa-reference §5.6
  EXPECT_EQ(out["kv_cache"]["bytes_at_context"], int64_t(48068) * 131072);
  EXPECT_NEAR(out["parameters"]["total"].get<double>(), 685e9, 2e9);
  EXPECT_NEAR(out["weight_bytes"]["F8_E4M3"].get<double>(), 680e9, 10e9);
}

TEST_F(CliInspect, ReportsMismatches) {
  const auto check = [](const std::filesystem::path& dir, const std::string& expected) {
    const auto r = run_dsa("inspect " + quoted(dir));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find(expected), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("does not match its config.json"), std::string::npos) << r.err;
  };
  const std::string norm = "model.layers.0.input_layernorm.weight";
  check(edited_copy("removed", [&](std::string& name, DType&, Shape&) { return name != norm; }),
        "missing: " + norm);
  check(edited_copy("renamed",
                    [&](std::string& name, DType&, Shape&) {
                      if (name == norm) name = "model.layers.0.input_norm.weight";
                      return true;
                    }),
        "unexpected: model.layers.0.input_norm.weight");
  check(edited_copy("reshaped",
                    [&](std::string& name, DType&, Shape& shape) {
                      if (name == norm) shape = Shape{255};
                      return true;
                    }),
        "wrong shape: " + norm + " (expected [256] BF16, found [255] BF16)");
  check(edited_copy("retyped",
                    [&](std::string& name, DType& dtype, Shape&) {
                      if (name == norm) dtype = DType::F32;
                      return true;
                    }),
        "wrong dtype: " + norm + " (expected [256] BF16, found [256] F32)");
  const auto r = run_dsa("inspect --json " + quoted(*dir_ / "removed"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(json::parse(r.out)["mismatches"], json::array({"missing: " + norm + " ([256] BF16)"}));
}

TEST_F(CliInspect, BadConfigNamesTheKey) {
  TempDir dir;
  std::string config = test::read_text_file(tiny() / "config.json");
  config.replace(config.find("\"n_group\": 2"), 12, "\"n_group\": 3");
  test::write_text_file(dir / "config.json", config);
  const auto r = run_dsa("inspect " + quoted(dir.path()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'n_routed_experts' must be divisible by 'n_group' (8 vs 3)"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace dsa

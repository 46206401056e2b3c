// The built-in model (apps/dsa/embedded_model.h): `dsa run` without -m unpacks it into the cache
// folder once, byte for byte the files of assets/dsa-small, reuses it, repairs a damaged copy,
// and leaves the cache alone when -m is given. A build without it says so and asks for -m.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

class EmbeddedModel : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("DSA_CACHE_DIR", cache_.path().c_str(), 1); }
  void TearDown() override { ::unsetenv("DSA_CACHE_DIR"); }

  // The one model folder under the cache, or an empty path.
  fs::path unpacked() const {
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(cache_.path() / "models", error)) {
      if (entry.is_directory()) return entry.path();
    }
    return {};
  }
  test::TempDir cache_;
};

const char* kFiles[] = {"config.json", "model.safetensors", "tokenizer.json"};

TEST_F(EmbeddedModel, RunWithoutModelFlagUsesTheBuiltInModel) {
  const std::string args = "run -p 'In the beginning' -n 4 --temp 0 -t 2";
  auto r = test::run_dsa(args);
  if (!DSA_HAS_EMBEDDED_MODEL) {  // configured with DSA_EMBED_MODEL=OFF or without the assets
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("without a built-in model"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("-m DIR"), std::string::npos) << r.err;
    return;
  }
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  const fs::path dir = unpacked();
  ASSERT_FALSE(dir.empty());
  EXPECT_EQ(dir.filename().string().rfind("dsa-small-", 0), 0u) << dir;
  const fs::path assets = fs::path(DSA_SOURCE_DIR) / "assets/dsa-small";
  for (const char* name : kFiles) {
    EXPECT_EQ(test::read_text_file(dir / name), test::read_text_file(assets / name)) << name;
  }

  // Reused as it is: the same output, the files untouched.
  const auto written = fs::last_write_time(dir / "model.safetensors");
  const auto again = test::run_dsa(args);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, r.out);
  EXPECT_EQ(fs::last_write_time(dir / "model.safetensors"), written);

  // A damaged copy (a truncated weight file) is unpacked again.
  fs::resize_file(dir / "model.safetensors", 1000);
  const auto repaired = test::run_dsa(args);
  ASSERT_EQ(repaired.exit_code, 0) << repaired.err;
  EXPECT_EQ(repaired.out, r.out);
  EXPECT_EQ(fs::file_size(dir / "model.safetensors"), fs::file_size(assets / "model.safetensors"));
  std::error_code error;
  size_t entries = 0;
  for (auto it = fs::directory_iterator(cache_.path() / "models", error);
       it != fs::directory_iterator(); ++it) {
    ++entries;  // no temporary folder left behind
  }
  EXPECT_EQ(entries, 1u);
}

TEST_F(EmbeddedModel, ModelFlagLeavesTheCacheAlone) {
  const auto r = test::run_dsa("run -m /nonexistent/model -p hi -n 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/model"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(cache_.path() / "models"));
}

}  // namespace
}  // namespace dsa

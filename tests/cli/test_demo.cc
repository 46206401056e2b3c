// `dsa demo --quick` end to end into a temporary folder: it generates the quick demo model, prints
// the table, the ASCII chart and the next steps, writes the SVG, and reuses the model on a second
// run; bad flags and unusable model folders are clear errors. The built-in model's sample comes
// first (unpacked into a temporary cache). No speed is checked.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::run_dsa;
using test::TempDir;

TEST(CliDemo, QuickRunGeneratesMeasuresAndReuses) {
  TempDir dir;
  ::setenv("DSA_CACHE_DIR", (dir / "cache").c_str(), 1);
  const std::string model = "'" + (dir / "demo").string() + "'";
  const auto r = run_dsa("demo --quick -t 2 --model " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  if (DSA_HAS_EMBEDDED_MODEL) {
    EXPECT_NE(r.out.find("The built-in model dsa-small"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("continues \"In the beginning\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("generation: 48 tokens"), std::string::npos) << r.out;
  } else {
    EXPECT_NE(r.out.find("without its built-in model"), std::string::npos) << r.out;
  }
  EXPECT_NE(r.out.find("generating the demo model into"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "demo/config.json"));
  EXPECT_NE(r.out.find("index_topk 64"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| position | sparse ms/token | dense ms/token | dense / sparse |"),
            std::string::npos)
      << r.out;
  for (const char* row : {"\n| 0 | ", "\n| 256 | ", "\n| 4096 | ", "\n| 8128 | "}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << row << " in " << r.out;
  }
  EXPECT_NE(r.out.find("ms per decoded token"), std::string::npos) << r.out;  // the chart
  EXPECT_NE(r.out.find("D dense   S sparse (DSA)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dense / sparse = "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Where to go next:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" bench -m "), std::string::npos) << r.out;
  const std::string svg = test::read_text_file(dir / "demo/demo-cost.svg");
  EXPECT_NE(svg.find("sparse (DSA)"), std::string::npos);

  const auto again = run_dsa("demo --quick -t 2 --model " + model);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out.find("generating the demo model"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("(generated earlier)"), std::string::npos) << again.out;
  ::unsetenv("DSA_CACHE_DIR");
}

TEST(CliDemo, BadFlagsAndModels) {
  TempDir dir;
  ::setenv("DSA_CACHE_DIR", (dir / "cache").c_str(), 1);  // runs that get past the flags
  const auto expect_error = [](const std::string& args, const std::string& message) {
    const auto r = run_dsa(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
    EXPECT_TRUE(r.err.starts_with("dsa: error: ")) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\n" << r.err;
  };
  expect_error("demo --quick -t 0", "--threads: 0 must be at least 1");
  expect_error("demo --quick -t two", "--threads: 'two' is not an integer");
  expect_error("demo --quick --plot /nonexistent-dir/cost.svg",
               "--plot: folder /nonexistent-dir does not exist");
  test::write_random_model(dir / "v3", test::preset_config("tiny-v3"), 1);
  expect_error("demo --model '" + (dir / "v3").string() + "'",
               "it has no indexer, so no sparse attention to compare");
  std::filesystem::create_directories(dir / "stray");
  test::write_text_file(dir / "stray/model.safetensors", "x");
  expect_error("demo --quick --model '" + (dir / "stray").string() + "'",
               "holds .safetensors files but no config.json");
  EXPECT_NE(run_dsa("demo --no-such-flag").exit_code, 0);  // CLI11's own parse error
  ::unsetenv("DSA_CACHE_DIR");
}

}  // namespace
}  // namespace dsa

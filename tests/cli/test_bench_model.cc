// `dsa bench -m DIR` end to end on a tiny random model: the JSON records and their fields, the
// markdown table and its header, the SVG plot, `bench attention` still reachable, and clear errors
// (exit status 1, the flag named) for bad flags and models. No speed is checked.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;
using test::run_dsa;
using test::TempDir;

class CliBenchModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    test::write_random_model(dir_->path() / "tiny", test::preset_config("tiny"), 5);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string model_flag() { return "-m '" + (dir_->path() / "tiny").string() + "'"; }

  static TempDir* dir_;
};
TempDir* CliBenchModel::dir_ = nullptr;

TEST_F(CliBenchModel, JsonRecordsAndPlot) {
  TempDir out;
  const std::string plot = (out / "cost.svg").string();
  const auto r = run_dsa("bench " + model_flag() + " -d 0,20 -p 4 -n 2 -r 1 -t 2 --json --plot '" +
                         plot + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress bar outside a terminal
  const json records = json::parse(r.out);
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), 8u);  // 2 modes x 2 depths x (pp, tg)
  for (const json& record : records) {
    for (const char* field :
         {"model", "n_params", "mode", "depth", "test", "n_tokens", "runs", "tokens_per_s",
          "tokens_per_s_min", "tokens_per_s_max", "ms_per_token", "ms_per_token_min",
          "ms_per_token_max", "threads", "synthetic", "cpu", "dsa_version", "peak_rss_bytes",
          "load_average_1m"}) {
      ASSERT_TRUE(record.contains(field)) << field << " in " << record.dump();
    }
    EXPECT_EQ(record["model"], "tiny");
    EXPECT_TRUE(record["mode"] == "sparse" || record["mode"] == "dense") << record.dump();
    EXPECT_TRUE(record["depth"] == 0 || record["depth"] == 20) << record.dump();
    EXPECT_EQ(record["n_tokens"].get<int64_t>(), record["test"] == "pp" ? 4 : 2) << record.dump();
    EXPECT_GT(record["tokens_per_s"].get<double>(), 0);
    EXPECT_GT(record["ms_per_token"].get<double>(), 0);
    EXPECT_EQ(record["threads"], 2);
    EXPECT_EQ(record["synthetic"], false);
    EXPECT_GT(record["peak_rss_bytes"].get<int64_t>(), 0);
  }
  const std::string svg = test::read_text_file(plot);
  EXPECT_TRUE(svg.starts_with("<?xml")) << svg;
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  EXPECT_NE(svg.find("decode/prefill cost per token vs position"), std::string::npos);
  for (const char* series :
       {"sparse decode (tg)", "dense decode (tg)", "sparse prefill (pp)", "dense prefill (pp)"}) {
    EXPECT_NE(svg.find(series), std::string::npos) << series;
  }
}

TEST_F(CliBenchModel, TableWithSyntheticCache) {
  const auto r = run_dsa("bench " + model_flag() +
                         " -d 0,24 -p 4 -n 2 -r 2 --synthetic-cache --attention dense,sparse");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("depth reached by a synthetic cache"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("peak RSS "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| model | params | threads | mode | test | t/s | ms/token |"),
            std::string::npos)
      << r.out;
  for (const char* row :
       {"| dense | pp4 |", "| dense | tg2 |", "| dense | pp4 @ d24 |", "| sparse | tg2 @ d24 |"}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << row << " in " << r.out;
  }
  // The table follows --attention's order.
  EXPECT_LT(r.out.find("| dense | pp4 |"), r.out.find("| sparse | pp4 |"));
  EXPECT_NE(r.out.find("over 2 runs"), std::string::npos);
  EXPECT_NE(r.out.find("tg speedup of sparse over dense: d0: "), std::string::npos) << r.out;
}

TEST_F(CliBenchModel, AttentionSubcommandStillWorks) {
  const auto r = run_dsa("bench attention --depths 256 --runs 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out).size(), 3u);
}

TEST_F(CliBenchModel, BadFlagsAreClearErrors) {
  const auto expect_error = [](const std::string& args, const std::string& message) {
    const auto r = run_dsa("bench " + args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.err.find("dsa: error: " + message), std::string::npos) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args;
  };
  const std::string m = model_flag();
  expect_error(m + " --attention sparse,fast", "--attention: 'fast' is not one of sparse, dense");
  expect_error(m + " --attention dense,dense",
               "bench: attention mode 'dense' (--attention) is given twice");
  expect_error(m + " -d -5", "-d: -5 must be at least 0");
  expect_error(m + " -d 0,,16", "-d: '' is not an integer");
  expect_error(m + " -d ''", "-d: no depths given");
  expect_error(m + " -d 4k", "-d: '4k' is not an integer");
  expect_error(m + " -d 2040 -p 8 -n 8",
               "bench: max depth 2040 + n_prompt 8 + n_gen 8 = 2056 positions exceed the model's "
               "max_position_embeddings (2048); lower -d, -p or -n");
  expect_error(m + " -p x", "-p: 'x' is not an integer");
  expect_error(m + " -n -1", "-n: -1 must be at least 0");
  expect_error(m + " -p 0 -n 0", "bench: n_prompt (-p) and n_gen (-n) are both 0");
  expect_error(m + " -r 0", "-r: 0 must be at least 1");
  expect_error(m + " -t 0", "--threads: 0 must be at least 1");
  expect_error(m + " --plot /nonexistent-dir/cost.svg",
               "--plot: folder /nonexistent-dir does not exist");
  expect_error("-m /nonexistent-model", "bench: cannot load the model in /nonexistent-model: ");
  expect_error("", "bench: give -m DIR for the model benchmark, or a subcommand (attention)");
  expect_error(m + " attention --depths 256",
               "bench: -m is for the model benchmark; `bench attention` takes no model");
}

}  // namespace
}  // namespace dsa

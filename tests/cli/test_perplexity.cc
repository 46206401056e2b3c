// `dsa perplexity` end to end on a tiny random model: the JSON object and the report for
// --tokens-file, a text file with a tokenizer (BOS per window), and clear errors (exit status 1)
// for bad flags, missing files, short texts, contexts beyond the model, and sparse on V3.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;
using test::run_dsa;
using test::TempDir;

class CliPerplexity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    test::write_random_model(dir_->path() / "tiny", test::preset_config("tiny"), 4);
    test::write_random_model(dir_->path() / "v3", test::preset_config("tiny-v3"), 4);
    std::string ids;
    for (int i = 0; i < 100; ++i)
      ids += std::to_string((i * 389 + 5) % 1024) + (i % 10 ? " " : "\n");
    test::write_text_file(dir_->path() / "ids.txt", ids);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string path(const std::string& name) {
    return "'" + (dir_->path() / name).string() + "'";
  }

  static TempDir* dir_;
};
TempDir* CliPerplexity::dir_ = nullptr;

TEST_F(CliPerplexity, JsonForTokenIds) {
  const auto r = run_dsa("perplexity -m " + path("tiny") + " --tokens-file " + path("ids.txt") +
                         " -c 32 -b 8 -t 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress bar outside a terminal
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["tokens"], 100);
  EXPECT_EQ(j["context"], 32);
  EXPECT_EQ(j["chunk"], 8);
  EXPECT_EQ(j["windows"], 3);
  EXPECT_EQ(j["scored_per_window"], 16);
  EXPECT_TRUE(j["bos"].is_null());
  ASSERT_EQ(j["modes"].size(), 2u);  // sparse and dense by default on a V3.2 model
  EXPECT_EQ(j["modes"][0]["mode"], "sparse");
  EXPECT_EQ(j["modes"][1]["mode"], "dense");
  for (const json& m : j["modes"]) {
    EXPECT_EQ(m["scored_tokens"], 48);
    const double nll = m["mean_nll"].get<double>(), ppl = m["ppl"].get<double>();
    EXPECT_DOUBLE_EQ(ppl, std::exp(nll));
    EXPECT_DOUBLE_EQ(m["ppl_error"].get<double>(), ppl * m["mean_nll_error"].get<double>());
    EXPECT_GT(m["tokens_per_s"].get<double>(), 0);
  }
  ASSERT_EQ(j["vs_dense"].size(), 1u);
  const json& c = j["vs_dense"][0];
  EXPECT_EQ(c["mode"], "sparse");
  EXPECT_EQ(c["reference"], "dense");
  EXPECT_EQ(c["scored_tokens"], 48);
  EXPECT_GE(c["mean_kl"].get<double>(), 0);  // ctx 32 > index_topk 16: the modes differ
  EXPECT_GE(c["max_kl"].get<double>(), c["mean_kl"].get<double>());
  const double agreement = c["top1_agreement_pct"].get<double>();
  EXPECT_TRUE(agreement >= 0 && agreement <= 100) << agreement;
}

TEST_F(CliPerplexity, ReportForDenseOnly) {
  const auto r = run_dsa("perplexity -m " + path("tiny") + " --tokens-file " + path("ids.txt") +
                         " -c 16 --attention dense");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("6 windows of 16 tokens (96 of 100 tokens)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| mode | PPL | mean NLL (nats) | scored tokens | forward t/s |"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("| dense | "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("| sparse | "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("KL"), std::string::npos) << r.out;  // nothing to compare against
}

TEST_F(CliPerplexity, SparseEqualsDenseWithinTopK) {
  // ctx 16 = index_topk: sparse attends to every key, like dense.
  const auto r = run_dsa("perplexity -m " + path("tiny") + " --tokens-file " + path("ids.txt") +
                         " -c 16 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json c = json::parse(r.out)["vs_dense"][0];
  EXPECT_NEAR(c["mean_kl"].get<double>(), 0, 1e-9);  // see tests/perf/test_perplexity.cc
  EXPECT_EQ(c["top1_agreement_pct"].get<double>(), 100);
}

TEST_F(CliPerplexity, TextFileWithTokenizer) {
  TempDir dir;
  test::write_random_model(dir / "model", test::preset_config("tiny"), 4);
  std::filesystem::copy_file(test::data_dir() / "tokenizer/trained_small/tokenizer.json",
                             dir / "model/tokenizer.json");
  const std::string text = test::read_text_file(test::data_dir() / "tokenizer/train_small.txt");
  test::write_text_file(dir / "text.txt", text.substr(0, 3000));
  const std::string model = "'" + (dir / "model").string() + "'";
  const auto r =
      run_dsa("perplexity -m " + model + " -f '" + (dir / "text.txt").string() + "' -c 64 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["bos"], 0);  // <｜begin▁of▁sentence｜> starts every window
  EXPECT_GE(j["windows"].get<int64_t>(), 2);
  EXPECT_EQ(j["modes"][0]["scored_tokens"].get<int64_t>(), j["windows"].get<int64_t>() * 32);
  // Without a tokenizer, -f cannot work and says what to do instead.
  const auto no_tokenizer =
      run_dsa("perplexity -m " + path("tiny") + " -f '" + (dir / "text.txt").string() + "'");
  EXPECT_EQ(no_tokenizer.exit_code, 1);
  EXPECT_NE(no_tokenizer.err.find("has no tokenizer.json to encode the text; give --tokens-file"),
            std::string::npos)
      << no_tokenizer.err;
}

TEST_F(CliPerplexity, ClearErrors) {
  const std::string m = "perplexity -m " + path("tiny") + " ";
  const std::string ids = " --tokens-file " + path("ids.txt");
  const auto expect_error = [](const std::string& args, const std::string& message) {
    const auto r = run_dsa(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
    EXPECT_TRUE(r.err.starts_with("dsa: error: ")) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << args << "\n" << r.out;
  };
  expect_error(m + "--tokens-file /nonexistent/ids.txt",
               "--tokens-file: /nonexistent/ids.txt: no such file");
  expect_error(m + "-f /nonexistent/text.txt", "-f: /nonexistent/text.txt: no such file");
  expect_error(m, "perplexity: give exactly one of -f FILE (text) or --tokens-file FILE");
  expect_error(m + ids + " -f " + path("ids.txt"), "perplexity: give exactly one of -f FILE");
  expect_error(m + ids + " -c 64",
               "perplexity: the text has 100 tokens, fewer than 2 windows of 64 (-c): at least "
               "128 tokens are needed (give a longer text or a smaller -c)");
  expect_error(m + ids, "at least 1024 tokens are needed");  // default context 512
  expect_error(m + ids + " -c 4096",
               "perplexity: context 4096 (-c) exceeds the model's max_position_embeddings (2048)");
  expect_error(m + ids + " -c 1", "-c: 1 must be at least 2");
  expect_error(m + ids + " -c x", "-c: 'x' is not an integer");
  expect_error(m + ids + " -b 0", "-b: 0 must be at least 1");
  expect_error(m + ids + " -t 0", "--threads: 0 must be at least 1");
  expect_error(m + ids + " --attention sparse,fast",
               "--attention: 'fast' is not one of sparse, dense, auto");
  expect_error(m + ids + " -c 16 --attention dense,dense",
               "attention mode 'dense' (--attention) is given twice");
  expect_error("perplexity -m " + path("v3") + ids + " -c 16 --attention sparse,dense",
               "perplexity: attention mode 'sparse' (--attention) needs a V3.2 model with an "
               "indexer; this one is DeepseekV3ForCausalLM (use --attention dense)");
  expect_error("perplexity -m /nonexistent-model" + ids,
               "perplexity: cannot load the model in /nonexistent-model");
  TempDir dir;
  test::write_text_file(dir / "big.txt", "1 2 3 5000");
  expect_error(m + "--tokens-file '" + (dir / "big.txt").string() + "'",
               "--tokens-file: token 5000 (item 4) is outside the model's vocabulary (1024)");
  // A V3 model runs dense by default.
  const auto v3 = run_dsa("perplexity -m " + path("v3") + ids + " -c 16 --json");
  ASSERT_EQ(v3.exit_code, 0) << v3.err;
  EXPECT_EQ(json::parse(v3.out)["modes"].size(), 1u);
}

}  // namespace
}  // namespace dsa

// `dsa eval` end to end on a random-weight tiny model with a trained tokenizer and a generated
// data set: every task runs in both attention modes, the JSON report has the shapes and ranges
// it promises (the chance level in its closed form), causality passes, the heat maps are written,
// and bad flags or a data set built with another tokenizer are clear errors.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string generated_text(uint32_t seed, int words) {
  static const char* kWords[] = {"river", "stone", "light", "cold", "green", "over", "the",
                                 "under", "quiet", "house", "road", "far",   "bird", "sings",
                                 "and",   "wind",  "moves", "slow", "field", "grain"};
  std::mt19937 rng(seed);
  std::string text;
  for (int w = 0; w < words; ++w) {
    text += kWords[rng() % 20];
    text += w % 9 == 8 ? ". " : " ";
  }
  return text + "\n";
}

class EvalCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const fs::path root = dir_->path();
    const fs::path tokenizer = test::data_dir() / "tokenizer/trained_small/tokenizer.json";
    fs::create_directories(root / "corpus");
    for (int d = 0; d < 12; ++d) {
      test::write_text_file(root / "corpus" / fmt::format("doc{}.txt", d),
                            generated_text(uint32_t(d + 1), 400));
    }
    auto r = test::run_dsa(fmt::format(
        "data build -i {} --tokenizer {} -o {} --heldout-fraction 0.5 --synthetic-ratio 0 --seed 3",
        (root / "corpus").string(), tokenizer.string(), (root / "data").string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = test::run_dsa(fmt::format("init-model --preset tiny --dtype bf16 --seed 2 -o {}",
                                  (root / "model").string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    fs::copy_file(tokenizer, root / "model/tokenizer.json");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string path(const std::string& name) { return (dir_->path() / name).string(); }
  static std::string base_args() {
    return fmt::format("eval -m {} --data {} -c 256 -t 2", path("model"), path("data"));
  }
  static test::TempDir* dir_;
};
test::TempDir* EvalCli::dir_ = nullptr;

TEST_F(EvalCli, EveryTaskInBothModes) {
  const auto r = test::run_dsa(base_args() +
                               " --lengths 256,320 --depths 0,1 --trials 1 --recall-windows 1 "
                               "--json " +
                               path("eval.json") + " --heatmap " + path("maps/heat"));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const json report = json::parse(test::read_text_file(path("eval.json")));
  EXPECT_EQ(report.at("context"), 256);

  const json& ppl = report.at("perplexity");
  ASSERT_EQ(ppl.at("modes").size(), 2u);
  for (const json& m : ppl.at("modes")) {
    EXPECT_TRUE(std::isfinite(m.at("ppl").get<double>()));
    EXPECT_GT(m.at("ppl").get<double>(), 1.0);
  }
  EXPECT_EQ(ppl.at("vs_dense").size(), 1u);

  ASSERT_EQ(report.at("retrieval").size(), 6u);  // 3 tasks x 2 modes
  for (const json& t : report.at("retrieval")) {
    EXPECT_EQ(t.at("grid").size(), 2u);
    EXPECT_EQ(t.at("grid")[0].size(), 2u);
    EXPECT_EQ(t.at("trials"), 4);
    const double accuracy = t.at("accuracy").get<double>();
    EXPECT_GE(accuracy, 0.0);
    EXPECT_LE(accuracy, 1.0);
    const std::string file = fmt::format("maps/heat-{}-{}.svg", t.at("task").get<std::string>(),
                                         t.at("mode").get<std::string>());
    EXPECT_TRUE(fs::exists(path(file))) << file;
  }

  const json& recall = report.at("indexer_recall");
  const int64_t k = report.at("index_topk").get<int64_t>();
  double chance = 0;
  for (int64_t t = k; t < 256; ++t) chance += double(k) / double(t + 1);
  chance /= double(256 - k);
  EXPECT_NEAR(recall.at("mean_chance").get<double>(), chance, 1e-9);
  ASSERT_EQ(recall.at("layers").size(), 2u);
  for (const json& layer : recall.at("layers")) {
    EXPECT_GT(layer.at("recall").get<double>(), 0.0);
    EXPECT_LE(layer.at("recall").get<double>(), layer.at("oracle").get<double>() + 1e-6);
    EXPECT_LE(layer.at("recall").get<double>(), 1.0 + 1e-6);
    EXPECT_GE(layer.at("fp8_overlap").get<double>(), 0.0);
  }

  ASSERT_EQ(report.at("causality").size(), 2u);
  for (const json& c : report.at("causality")) {
    EXPECT_TRUE(c.at("passed").get<bool>()) << c.dump();
    EXPECT_TRUE(c.at("later_rows_changed").get<bool>()) << c.dump();
  }
  EXPECT_NE(r.out.find("passkey (sparse)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("indexer recall"), std::string::npos) << r.out;
}

TEST_F(EvalCli, TopkSweep) {
  const auto r = test::run_dsa(base_args() +
                               " --topk 8,64,256 --ppl-windows 2 --recall-windows 1 "
                               "--json " +
                               path("sweep.json") + " --plot " + path("sweep.svg"));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const json sweep = json::parse(test::read_text_file(path("sweep.json"))).at("k_sweep");
  ASSERT_EQ(sweep.at("points").size(), 3u);
  const double dense = sweep.at("dense_ppl").get<double>();
  EXPECT_TRUE(std::isfinite(dense));
  double last_recall = 0;
  for (const json& p : sweep.at("points")) {
    EXPECT_TRUE(std::isfinite(p.at("ppl").get<double>())) << p.dump();
    if (p.at("k") == 256) {  // every row has at most k keys: the same attention as dense
      EXPECT_FALSE(p.contains("recall"));
      EXPECT_NEAR(p.at("ppl").get<double>(), dense, 1e-3 * dense);
      continue;
    }
    const double recall = p.at("recall").get<double>();
    EXPECT_LE(recall, p.at("oracle").get<double>() + 1e-6);
    EXPECT_GT(recall, last_recall);  // more keys from the same scores hold more mass
    last_recall = recall;
  }
  EXPECT_TRUE(fs::exists(path("sweep.svg")));
  EXPECT_EQ(json::parse(test::read_text_file(path("sweep.json"))).count("retrieval"), 0u);
}

TEST_F(EvalCli, BadInputIsAClearError) {
  auto r = test::run_dsa(base_args() + " --tasks ppl,bogus");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown task 'bogus'"), std::string::npos) << r.err;
  r = test::run_dsa(base_args() + " --depths 0,2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--depths"), std::string::npos) << r.err;
  r = test::run_dsa(base_args() + " --lengths 4096 --tasks passkey");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("max_position_embeddings"), std::string::npos) << r.err;
  r = test::run_dsa(fmt::format("eval -m {} --data {}", path("model"), path("missing")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;

  // A model whose tokenizer is not the data's.
  fs::create_directories(path("other"));
  for (const auto& entry : fs::directory_iterator(path("model"))) {
    fs::copy_file(entry.path(), fs::path(path("other")) / entry.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  fs::copy_file(test::data_dir() / "tokenizer/tiny_tokenizer.json", path("other/tokenizer.json"),
                fs::copy_options::overwrite_existing);
  r = test::run_dsa(fmt::format("eval -m {} --data {}", path("other"), path("data")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tokenizer"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsa

// `dsa data build` end to end: a few text files in a temp folder, the small trained tokenizer of
// tests/data, the summary it prints, the data set it writes (opened with the trainer's loader),
// and its errors (exit status 1, "dsa: error: ..." naming the file or flag).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/test_util.h"
#include "train/data_dataset.h"
#include "train/data_sampler.h"
#include "train/data_sha256.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

std::string tokenizer() {
  return (test::data_dir() / "tokenizer/trained_small/tokenizer.json").string();
}

class DataCliTest : public ::testing::Test {
 protected:
  DataCliTest() {
    fs::create_directories(dir_ / "corpus");
    for (int d = 0; d < 9; ++d) {
      std::string text;
      for (int s = 0; s < 4 + d; ++s) {
        text +=
            "The sparse attention reads some numbers quickly. A small engine returns a "
            "vector, then stops. ";
      }
      test::write_text_file(dir_ / "corpus" / ("doc" + std::to_string(d) + ".txt"), text + "\n");
    }
  }

  std::string build_args(const std::string& out) const {
    return "data build -i '" + (dir_ / "corpus").string() + "' --tokenizer '" + tokenizer() +
           "' -o '" + (dir_ / out).string() + "'";
  }

  test::TempDir dir_;
};

TEST_F(DataCliTest, BuildsALoadableDataSet) {
  const auto r = test::run_dsa(build_args("out") +
                               " --heldout-fraction 0.2 --synthetic-ratio 0.25 "
                               "--synthetic-lengths 256,300 --seed 5 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("read 9 file(s) -> "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("train:   "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("passkey "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("heldout: "), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress bar frames outside a terminal

  const train::TokenDataset data = train::TokenDataset::open(dir_ / "out");
  EXPECT_EQ(data.tokenizer_sha256(), train::sha256_file_hex(tokenizer()));
  EXPECT_GT(data.documents(train::Split::kHeldout), 0);
  EXPECT_GT(data.tokens(train::Split::kTrain), data.tokens(train::Split::kHeldout));
  EXPECT_NE(r.out.find("tokenizer sha256 " + data.tokenizer_sha256()), std::string::npos);
  const auto& info = data.info();
  EXPECT_EQ(info["seed"], 5);
  EXPECT_EQ(info["synthetic_lengths"], nlohmann::json::array({256, 300}));
  EXPECT_NE(info["command"].get<std::string>().find("dsa data build -i "), std::string::npos);
  EXPECT_NE(info["command"].get<std::string>().find("--seed 5"), std::string::npos);
  // The trainer's sampler reads it.
  train::BatchSampler sampler(data, train::Split::kTrain, 64, 2, 1);
  std::vector<int32_t> batch;
  sampler.next(batch);
  EXPECT_EQ(batch.size(), 128u);

  // The same command again gives the same bytes.
  ASSERT_EQ(test::run_dsa(build_args("again") + " --heldout-fraction 0.2 --synthetic-ratio 0.25 "
                                                "--synthetic-lengths 256,300 --seed 5 -t 1")
                .exit_code,
            0);
  EXPECT_EQ(test::read_text_file(dir_ / "out/train.safetensors"),
            test::read_text_file(dir_ / "again/train.safetensors"));
}

TEST_F(DataCliTest, WarnsAboutEmptyFiles) {
  test::write_text_file(dir_ / "corpus/blank.txt", "\n\n");
  const auto r = test::run_dsa(build_args("out") + " --synthetic-ratio 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(
      r.err.find("dsa: warning: " + (dir_ / "corpus/blank.txt").string() + ": empty, skipped"),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("read 10 file(s) (1 empty, skipped)"), std::string::npos) << r.out;
}

TEST_F(DataCliTest, Errors) {
  auto expect_error = [](const std::string& args, const std::string& message) {
    const auto r = test::run_dsa(args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\n" << r.err;
  };
  expect_error("data build -i /nonexistent/corpus --tokenizer '" + tokenizer() + "' -o '" +
                   (dir_ / "x").string() + "'",
               "dsa: error: -i /nonexistent/corpus: no such file or folder");
  expect_error(build_args("x") + " --heldout-fraction 1.5",
               "--heldout-fraction: 1.5 must be in [0, 1)");
  expect_error(build_args("x") + " --synthetic-ratio abc",
               "--synthetic-ratio: 'abc' is not a number");
  expect_error(build_args("x") + " --synthetic-lengths 256,x",
               "--synthetic-lengths: 'x' is not an integer");
  expect_error(build_args("x") + " --synthetic-lengths 30", "--synthetic-lengths 30: synthetic");
  test::write_text_file(dir_ / "corpus/broken.txt", "ok\xC3(");
  expect_error(build_args("x"),
               (dir_ / "corpus/broken.txt").string() + ": invalid UTF-8 at byte offset 2");
  expect_error("data build -i '" + (dir_ / "corpus").string() +
                   "' --tokenizer /nonexistent/t.json -o '" + (dir_ / "x").string() + "'",
               "/nonexistent/t.json");
  expect_error("data", "A subcommand is required");
  EXPECT_FALSE(fs::exists(dir_ / "x/data.json"));
}

}  // namespace
}  // namespace dsa

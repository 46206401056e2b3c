// A tiny random-weight model with a tokenizer trained for it, for the `dsa run` and `dsa chat`
// tests: `dsa init-model --preset tiny` (vocabulary 1024) and `dsa tokenizer train` (400 ids).
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "support/test_util.h"

namespace dsa::test {

// Writes the model into `dir`/model and returns that folder.
inline std::string write_tiny_chat_model(const TempDir& dir) {
  const std::string model = (dir / "model").string();
  auto r = run_dsa(fmt::format("init-model --preset tiny --seed 3 -o '{}'", model));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string corpus;
  for (int i = 0; i < 20; ++i) {
    corpus +=
        "The quick brown fox jumps over the lazy dog. A sparse attention model reads the tokens "
        "it needs and skips the rest; the indexer scores every key and keeps the top ones.\n";
  }
  write_text_file(dir / "corpus.txt", corpus);
  r = run_dsa(fmt::format("tokenizer train -f '{}' --vocab-size 400 -o '{}/tokenizer.json'",
                          (dir / "corpus.txt").string(), model));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return model;
}

// Base of a test suite that shares one tiny chat model, made once for the suite.
class TinyChatModelSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    model_ = new std::string(write_tiny_chat_model(*dir_));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
    model_ = nullptr;
    dir_ = nullptr;
  }
  static const std::string& model() { return *model_; }

 private:
  static inline TempDir* dir_ = nullptr;
  static inline std::string* model_ = nullptr;
};

}  // namespace dsa::test

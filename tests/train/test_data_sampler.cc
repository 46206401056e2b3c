// BatchSampler and heldout_windows (train/data_sampler.h): where windows start, what they hold,
// that the stream is a pure function of (seed, position) so seek() resumes it exactly, that an
// epoch draws every start once, and the errors for splits shorter than a window.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "train/data_dataset.h"
#include "train/data_sampler.h"
#include "train/data_shards.h"

namespace dsa::train {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kBos = 0;

// Documents of the given lengths (BOS included) and kinds; token i of the split is 1 + i % 997
// away from document starts, so every window's content identifies where it came from.
SplitTokens make_split(const std::vector<int64_t>& lengths,
                       const std::vector<DocumentKind>& kinds) {
  SplitTokens split;
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> body;
    for (int64_t j = 1; j < lengths[d]; ++j) {
      body.push_back(int32_t(1 + (split.tokens.size() + size_t(j)) % 997));
    }
    split.append_document(kBos, body, kinds[d]);
  }
  return split;
}

TokenDataset write_and_open(const fs::path& dir, const SplitTokens& train,
                            const SplitTokens& heldout) {
  write_split_file(dir / "train.safetensors", train);
  write_split_file(dir / "heldout.safetensors", heldout);
  const nlohmann::json info = {
      {"format", "dsa-token-dataset"},
      {"format_version", 1},
      {"tokenizer", {{"sha256", "00"}, {"vocab_size", 1000}, {"bos_id", kBos}}},
      {"splits",
       {{"train", {{"tokens", train.tokens.size()}, {"documents", train.documents()}}},
        {"heldout", {{"tokens", heldout.tokens.size()}, {"documents", heldout.documents()}}}}}};
  test::write_text_file(dir / "data.json", info.dump());
  return TokenDataset::open(dir);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

constexpr DocumentKind kText = DocumentKind::kText;
constexpr DocumentKind kPasskey = DocumentKind::kPasskey;
constexpr DocumentKind kNeedle = DocumentKind::kNeedle;

class SamplerTest : public ::testing::Test {
 protected:
  // Documents: text 23 | passkey 9 | text 5 | needle 17 | text 41 -> starts 0, 23, 32, 37, 54;
  // 95 tokens.
  SamplerTest()
      : train_(make_split({23, 9, 5, 17, 41}, {kText, kPasskey, kText, kNeedle, kText})),
        heldout_(make_split({30, 31}, {kText, kText})),
        data_(write_and_open(dir_.path(), train_, heldout_)) {}

  test::TempDir dir_;
  SplitTokens train_, heldout_;
  TokenDataset data_;
};

TEST_F(SamplerTest, WindowsStartAtDocumentsAndEverySeqTokensInsideText) {
  const BatchSampler sampler(data_, Split::kTrain, 7, 2, 1);
  // Text docs every 7 tokens from their start; synthetic docs (passkey at 23, needle at 37) only
  // at their start, never inside (30 and 44 are absent).
  const std::vector<int64_t> expected = {0, 7, 14, 21, 23, 32, 37, 54, 61, 68, 75, 82, 89};
  EXPECT_EQ(sampler.window_starts(), expected);
}

TEST_F(SamplerTest, RowsHoldTheWindowsAndWrapAtTheEnd) {
  const int64_t seq = 7, batch = 3;
  BatchSampler sampler(data_, Split::kTrain, seq, batch, 42);
  std::vector<int32_t> tokens;
  std::set<int64_t> seen;
  const int64_t n = int64_t(train_.tokens.size());
  for (uint64_t b = 0; b < 9; ++b) {
    BatchSampler probe(data_, Split::kTrain, seq, batch, 42);
    sampler.next(tokens);
    ASSERT_EQ(tokens.size(), size_t(batch * seq));
    for (int64_t row = 0; row < batch; ++row) {
      const int64_t start = probe.window_start(b * uint64_t(batch) + uint64_t(row));
      seen.insert(start);
      for (int64_t j = 0; j < seq; ++j) {
        ASSERT_EQ(tokens[size_t(row * seq + j)], train_.tokens[size_t((start + j) % n)])
            << "batch " << b << " row " << row << " start " << start;
      }
    }
  }
  EXPECT_TRUE(seen.count(89)) << "the window at 89 (wrapping past 95) was never drawn";
  EXPECT_EQ(sampler.position(), 9u);
}

TEST_F(SamplerTest, EachEpochDrawsEveryStartOnce) {
  BatchSampler sampler(data_, Split::kTrain, 7, 1, 5);
  const std::vector<int64_t>& starts = sampler.window_starts();
  const uint64_t count = starts.size();
  std::vector<int64_t> first_order;
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> drawn;
    for (uint64_t i = 0; i < count; ++i) drawn.push_back(sampler.window_start(epoch * count + i));
    if (epoch == 0) first_order = drawn;
    if (epoch == 1) {
      EXPECT_NE(drawn, first_order) << "epochs should be shuffled differently";
    }
    std::sort(drawn.begin(), drawn.end());
    EXPECT_EQ(drawn, starts) << "epoch " << epoch;
  }
}

TEST_F(SamplerTest, StreamIsAPureFunctionOfSeedAndPosition) {
  std::vector<std::vector<int32_t>> stream;
  BatchSampler a(data_, Split::kTrain, 11, 2, 7);
  for (int b = 0; b < 20; ++b) {
    stream.emplace_back();
    a.next(stream.back());
  }
  BatchSampler again(data_, Split::kTrain, 11, 2, 7);
  std::vector<int32_t> tokens;
  for (int b = 0; b < 20; ++b) {
    again.next(tokens);
    ASSERT_EQ(tokens, stream[size_t(b)]) << "batch " << b;
  }
  // A resumed run: seek to where a checkpoint stopped, then continue exactly.
  BatchSampler resumed(data_, Split::kTrain, 11, 2, 7);
  resumed.seek(13);
  EXPECT_EQ(resumed.position(), 13u);
  for (int b = 13; b < 20; ++b) {
    resumed.next(tokens);
    ASSERT_EQ(tokens, stream[size_t(b)]) << "batch " << b << " after seek(13)";
  }
  // Seeking backwards works too (the epoch's permutation is rebuilt).
  resumed.seek(2);
  resumed.next(tokens);
  EXPECT_EQ(tokens, stream[2]);
  // Another seed gives another stream.
  BatchSampler other(data_, Split::kTrain, 11, 2, 8);
  bool differs = false;
  for (int b = 0; b < 20; ++b) {
    other.next(tokens);
    differs = differs || tokens != stream[size_t(b)];
  }
  EXPECT_TRUE(differs);
}

TEST_F(SamplerTest, HeldoutSplitSampling) {
  BatchSampler sampler(data_, Split::kHeldout, 10, 1, 0);
  // Held-out: text 30 | text 31 -> starts 0, 10, 20, 30, 40, 50, 60.
  EXPECT_EQ(sampler.window_starts(), (std::vector<int64_t>{0, 10, 20, 30, 40, 50, 60}));
}

TEST_F(SamplerTest, Errors) {
  EXPECT_NE(error_of([&] { BatchSampler(data_, Split::kTrain, 96, 1, 0); })
                .find("the train split of " + dir_.path().string() +
                      " has 95 tokens, fewer than the sequence length 96"),
            std::string::npos);
  EXPECT_NE(error_of([&] { BatchSampler(data_, Split::kHeldout, 62, 1, 0); })
                .find("the heldout split of " + dir_.path().string() +
                      " has 61 tokens, fewer than the sequence length 62"),
            std::string::npos);
  EXPECT_NO_THROW(BatchSampler(data_, Split::kTrain, 95, 1, 0));
  EXPECT_NE(error_of([&] { BatchSampler(data_, Split::kTrain, 0, 1, 0); }).find("at least 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              BatchSampler(data_, Split::kTrain, 8, 0, 0);
            }).find("batch size must be at least 1, got 0"),
            std::string::npos);
}

TEST_F(SamplerTest, HeldoutWindowsAreFixedAndSpread) {
  // 61 tokens, seq 6: 10 windows fit. Capped at 3 they start at windows 0, 3, 6 (floor(i * 10 /
  // 3)).
  const auto windows = heldout_windows(data_, 6, 3);
  ASSERT_EQ(windows.size(), 3u);
  const std::vector<int64_t> slots = {0, 3, 6};
  for (size_t i = 0; i < 3; ++i) {
    const std::vector<int32_t> expected(heldout_.tokens.begin() + slots[i] * 6,
                                        heldout_.tokens.begin() + slots[i] * 6 + 6);
    EXPECT_EQ(windows[i], expected) << "window " << i;
  }
  // Uncapped: all 10 windows, back to back from token 0; the last 1 token is left out.
  const auto all = heldout_windows(data_, 6, 1000);
  ASSERT_EQ(all.size(), 10u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i], std::vector<int32_t>(heldout_.tokens.begin() + int64_t(i) * 6,
                                           heldout_.tokens.begin() + int64_t(i) * 6 + 6));
  }
  EXPECT_EQ(all[0][0], kBos);
  EXPECT_EQ(heldout_windows(data_, 6, 1000), all);  // the same list every time
  EXPECT_EQ(heldout_windows(data_, 61, 5).size(), 1u);
  EXPECT_NE(error_of([&] { heldout_windows(data_, 62, 5); }).find("has 61 tokens, fewer than"),
            std::string::npos);
  EXPECT_NE(error_of([&] { heldout_windows(data_, 6, 0); }).find("max_windows must be at least 1"),
            std::string::npos);
}

}  // namespace
}  // namespace dsa::train

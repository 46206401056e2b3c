// Indices in tensor names: digits only and within int64, or no index at all (never an exception).
#include <gtest/gtest.h>

#include "core/decimal_index.h"

namespace dsa {
namespace {

TEST(DecimalIndex, ParsesDigitsThatFit) {
  EXPECT_EQ(parse_decimal_index("0"), 0);
  EXPECT_EQ(parse_decimal_index("61"), 61);
  EXPECT_EQ(parse_decimal_index("007"), 7);
  EXPECT_EQ(parse_decimal_index("9223372036854775807"), INT64_MAX);
}

TEST(DecimalIndex, RejectsWhatIsNoIndex) {
  for (const char* text : {"", "9223372036854775808", "99999999999999999999", "-1", "+1", " 1",
                           "1 ", "1a", "0x10", "1.5"}) {
    EXPECT_EQ(parse_decimal_index(text), std::nullopt) << text;
  }
}

TEST(DecimalIndex, IndexAfterPrefix) {
  EXPECT_EQ(index_after_prefix("layers.12.indexer.topk", "layers."), 12);
  EXPECT_EQ(index_after_prefix("layers.3", "layers."), 3);
  EXPECT_EQ(index_after_prefix("layers.99999999999999999999.indexer.topk", "layers."),
            std::nullopt);
  EXPECT_EQ(index_after_prefix("mtp.layers.1.x", "layers."), std::nullopt);
  EXPECT_EQ(index_after_prefix("layers..x", "layers."), std::nullopt);
  EXPECT_EQ(index_after_prefix("layers.-1.x", "layers."), std::nullopt);
}

}  // namespace
}  // namespace dsa

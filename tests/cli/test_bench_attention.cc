// `dsa bench attention`: the table and the JSON records at tiny depths, and clear errors (exit
// status 1, the flag named) for bad flags. No timing values are checked, only that they exist.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;
using test::run_dsa;

TEST(CliBenchAttention, JsonHasARecordPerModeAndDepth) {
  const auto r = run_dsa("bench attention --depths 256,512 --runs 1 --mode both --chunk 4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json records = json::parse(r.out);
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), 10u);  // decode: 3 modes x 2 depths, prefill: 2 x 2
  int dsa_records = 0;
  for (const json& record : records) {
    ASSERT_TRUE(record.contains("mode") && record.contains("depth") &&
                record.contains("ms_per_token"))
        << record.dump();
    EXPECT_GT(record["ms_per_token"].get<double>(), 0) << record.dump();
    const int64_t depth = record["depth"].get<int64_t>();
    EXPECT_TRUE(depth == 256 || depth == 512) << record.dump();
    const std::string phase = record["phase"];
    EXPECT_EQ(record["tokens"].get<int64_t>(), phase == "decode" ? 1 : 4);
    if (record["mode"] == "dsa") {
      ++dsa_records;
      for (const char* stage : {"indexer", "topk", "sparse_mla"}) {
        ASSERT_TRUE(record["stages"].contains(stage)) << record.dump();
        EXPECT_TRUE(record["stages"][stage].contains("pct_peak_flops")) << record.dump();
        EXPECT_TRUE(record["stages"][stage].contains("pct_bandwidth")) << record.dump();
      }
    }
  }
  EXPECT_EQ(dsa_records, 4);
}

TEST(CliBenchAttention, TablePrintsMachineRowsAndSpeedup) {
  const auto r = run_dsa("bench attention --depths 300 --runs 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("measured peaks: read bandwidth"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| phase | mode | depth | ms/token |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| decode | dense_bf16 | 300 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| decode | dense_fp8 | 300 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| decode | dsa | 300 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode speedup of dsa over dense_fp8: 300: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("indexer roofline (decode, per token"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  depth 300: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("prefill"), std::string::npos) << r.out;  // decode only by default
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress bar outside a terminal
}

void expect_flag_error(const std::string& flags, const std::string& message) {
  const auto r = run_dsa("bench attention " + flags);
  EXPECT_EQ(r.exit_code, 1) << flags;
  EXPECT_NE(r.err.find("dsa: error: " + message), std::string::npos) << flags << ": " << r.err;
  EXPECT_TRUE(r.out.empty()) << flags;
}

TEST(CliBenchAttention, BadFlagsAreClearErrors) {
  expect_flag_error("--depths 1024,0", "--depths: 0 must be at least 1");
  expect_flag_error("--depths=-4096", "--depths: -4096 must be at least 1");
  expect_flag_error("--depths 1024,4k", "--depths: '4k' is not an integer");
  expect_flag_error("--depths 1024,,2048", "--depths: '' is not an integer");
  expect_flag_error("--threads 0", "--threads: 0 must be at least 1");
  expect_flag_error("-t two", "--threads: 'two' is not an integer");
  expect_flag_error("--runs 0", "--runs: 0 must be at least 1");
  expect_flag_error("--chunk x", "--chunk: 'x' is not an integer");
  expect_flag_error("--mode sideways", "--mode: 'sideways' is not one of decode, prefill, both");
}

}  // namespace
}  // namespace dsa

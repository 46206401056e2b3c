// Timing statistics: percentiles by linear interpolation (checked against values worked out by
// hand from the closest-ranks rule), the summary, per-token scaling and the run counter.
#include <gtest/gtest.h>

#include "core/error.h"
#include "perf/timing.h"

namespace dsa {
namespace {

TEST(Percentile, OddSampleHitsRanks) {
  const std::vector<double> samples = {5, 1, 4, 2, 3};
  EXPECT_DOUBLE_EQ(percentile(samples, 0.0), 1);
  EXPECT_DOUBLE_EQ(percentile(samples, 0.25), 2);
  EXPECT_DOUBLE_EQ(percentile(samples, 0.5), 3);
  EXPECT_DOUBLE_EQ(percentile(samples, 0.75), 4);
  EXPECT_DOUBLE_EQ(percentile(samples, 1.0), 5);
}

TEST(Percentile, EvenSampleInterpolates) {
  // Sorted {1, 2, 3, 10}: rank p * 3. p = 0.5 -> rank 1.5 -> 2.5; p = 0.25 -> rank 0.75 -> 1.75;
  // p = 0.75 -> rank 2.25 -> 3 + 0.25 * 7 = 4.75.
  const std::vector<double> samples = {10, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(samples, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(percentile(samples, 0.25), 1.75);
  EXPECT_DOUBLE_EQ(percentile(samples, 0.75), 4.75);
}

TEST(Percentile, SingleSampleIsEveryPercentile) {
  EXPECT_DOUBLE_EQ(percentile({7.5}, 0.0), 7.5);
  EXPECT_DOUBLE_EQ(percentile({7.5}, 0.3), 7.5);
  EXPECT_DOUBLE_EQ(percentile({7.5}, 1.0), 7.5);
}

TEST(Percentile, RejectsEmptySampleAndBadP) {
  try {
    percentile({}, 0.5);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "percentile: no samples");
  }
  try {
    percentile({1, 2}, 1.5);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "percentile: p = 1.5 is outside [0, 1]");
  }
  EXPECT_THROW(percentile({1, 2}, -0.1), Error);
}

TEST(Summarize, KnownSample) {
  const TimingStats stats = summarize({0.004, 0.001, 0.003, 0.002, 0.010});
  EXPECT_EQ(stats.runs, 5);
  EXPECT_DOUBLE_EQ(stats.median, 0.003);
  EXPECT_DOUBLE_EQ(stats.min, 0.001);
  EXPECT_DOUBLE_EQ(stats.max, 0.010);
  EXPECT_DOUBLE_EQ(stats.q1, 0.002);
  EXPECT_DOUBLE_EQ(stats.q3, 0.004);
  EXPECT_DOUBLE_EQ(stats.spread(), 0.0045);
}

TEST(Summarize, RejectsEmptySample) {
  try {
    summarize({});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "timing summary: no samples");
  }
}

TEST(Scaled, DividesEveryStatistic) {
  const TimingStats stats = scaled(summarize({2, 4, 6, 8, 10}), 2);
  EXPECT_EQ(stats.runs, 5);
  EXPECT_DOUBLE_EQ(stats.median, 3);
  EXPECT_DOUBLE_EQ(stats.min, 1);
  EXPECT_DOUBLE_EQ(stats.max, 5);
  EXPECT_DOUBLE_EQ(stats.q1, 2);
  EXPECT_DOUBLE_EQ(stats.q3, 4);
}

TEST(TimeRuns, CallsWarmupPlusRunsAndTimesOnlyTheRuns) {
  int calls = 0;
  const std::vector<double> seconds = time_runs(2, 3, [&] { ++calls; });
  EXPECT_EQ(calls, 5);
  ASSERT_EQ(seconds.size(), 3u);
  for (double s : seconds) EXPECT_GE(s, 0.0);
}

}  // namespace
}  // namespace dsa

// The terminal chart of `dsa demo`: points land in the expected cells, lines join them, axes and
// legend are labelled, later series draw over earlier ones, and bad input is rejected.
#include <gtest/gtest.h>

#include <sstream>
#include <vector>

#include "core/error.h"
#include "perf/ascii_chart.h"

namespace dsa {
namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(AsciiChart, PlacesLinesAxesAndLegend) {
  AsciiChart chart;
  chart.x_label = "position";
  chart.y_label = "ms";
  chart.width = 21;
  chart.height = 5;
  chart.series = {{.name = "rising", .marker = 'D', .x = {0, 10}, .y = {0, 4}},
                  {.name = "flat", .marker = 'S', .x = {0, 10}, .y = {1, 1}}};
  const std::vector<std::string> out = lines(render_ascii_chart(chart));
  // y label, 5 plot rows, axis, tick labels, x label, legend.
  ASSERT_EQ(out.size(), 10u) << render_ascii_chart(chart);
  EXPECT_EQ(out[0], "ms");
  // y ticks 0..4 (nice steps of 1), one per row; "rising" climbs one row every 5 columns,
  // "flat" is drawn last across row 1.
  EXPECT_EQ(out[1].substr(0, 3), "4 +");
  EXPECT_EQ(out[1].back(), 'D');
  EXPECT_EQ(out[4], "1 +SSSSSSSSSSSSSSSSSSSSS");
  EXPECT_EQ(out[5], "0 +DDDD");  // column 3 steps up a row, joined to the one below
  EXPECT_EQ(out[6].substr(0, 3), "  +");
  EXPECT_NE(out[7].find('0'), std::string::npos);
  EXPECT_NE(out[7].find("10"), std::string::npos);  // the x axis ends at the last point
  EXPECT_NE(out[8].find("position"), std::string::npos);
  EXPECT_NE(out[9].find("D rising   S flat"), std::string::npos) << out[9];
}

TEST(AsciiChart, RejectsBadInput) {
  AsciiChart chart;
  EXPECT_THROW(render_ascii_chart(chart), Error);  // no points
  chart.series = {{.name = "a", .marker = 'a', .x = {0, 1}, .y = {1}}};
  EXPECT_THROW(render_ascii_chart(chart), Error);
  chart.series = {{.name = "a", .marker = 'a', .x = {2, 1}, .y = {1, 1}}};
  EXPECT_THROW(render_ascii_chart(chart), Error);
  chart.series = {{.name = "a", .marker = 'a', .x = {0, 1}, .y = {-1, 1}}};
  EXPECT_THROW(render_ascii_chart(chart), Error);
  chart.series = {{.name = "a", .marker = 'a', .x = {0, 1}, .y = {1, 1}}};
  chart.width = 9;
  EXPECT_THROW(render_ascii_chart(chart), Error);
}

}  // namespace
}  // namespace dsa

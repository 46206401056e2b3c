// A line chart drawn with plain ASCII characters for the terminal (`dsa demo`): a y axis with
// "nice" tick labels on the left, an x axis with tick labels below, and one line per series made
// of its marker character, one cell per column between its first and last point (linear
// interpolation between points). Later series are drawn over earlier ones. Both axes start at 0;
// the x axis ends at the largest x, the y axis at the first nice tick at or above the largest y.
//
//   ms/token
//      40 +                                      D
//         |                               DDDDDD
//      20 +                   DDDDDDDDDDDD
//         |SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
//       0 +--------+---------+---------+---------+
//         0       4000      8000     12000     16000
//                     position (tokens)
//   D dense   S sparse
#pragma once

#include <string>
#include <vector>

namespace dsa {

struct AsciiSeries {
  std::string name;  // legend text
  char marker = '*';
  std::vector<double> x;  // as many as y, ascending, all >= 0
  std::vector<double> y;  // all >= 0
};

struct AsciiChart {
  std::string x_label;
  std::string y_label;
  std::vector<AsciiSeries> series;
  int width = 60;   // plot area columns
  int height = 16;  // plot area rows
};

// The chart as text lines ending in '\n'. Throws dsa::Error if a series has x and y of different
// sizes, a negative or non-finite value or x not ascending, if there is no point at all, or if
// the plot area is below 10 x 4 cells.
std::string render_ascii_chart(const AsciiChart& chart);

}  // namespace dsa

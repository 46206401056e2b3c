#include "perf/ascii_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "perf/svg_plot.h"

namespace dsa {
namespace {

void validate(const AsciiChart& chart) {
  if (chart.width < 10 || chart.height < 4) {
    fail("ascii chart: plot area {} x {} is below 10 x 4 cells", chart.width, chart.height);
  }
  size_t points = 0;
  for (const AsciiSeries& s : chart.series) {
    if (s.x.size() != s.y.size()) {
      fail("ascii chart: series '{}' has {} x and {} y values", s.name, s.x.size(), s.y.size());
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || s.x[i] < 0 || s.y[i] < 0) {
        fail("ascii chart: series '{}' point {} ({}, {}) is negative or not finite", s.name, i,
             s.x[i], s.y[i]);
      }
      if (i > 0 && s.x[i] < s.x[i - 1]) {
        fail("ascii chart: series '{}' x values are not ascending at point {}", s.name, i);
      }
    }
    points += s.x.size();
  }
  if (points == 0) fail("ascii chart: no points to draw");
}

// About `steps` nice ticks from 0 covering `max` (covering 1 if `max` is 0).
std::vector<double> axis_ticks(double max, int steps) {
  return nice_ticks(0, max > 0 ? max : 1, steps);
}

std::string tick_label(double value) { return fmt::format("{:g}", value); }

}  // namespace

std::string render_ascii_chart(const AsciiChart& chart) {
  validate(chart);
  double x_max = 0, y_max = 0;
  for (const AsciiSeries& s : chart.series) {
    for (double x : s.x) x_max = std::max(x_max, x);
    for (double y : s.y) y_max = std::max(y_max, y);
  }
  // The x axis ends at the last point (data usually stops at a round-ish position already); the
  // y axis at a nice tick above the highest point.
  std::vector<double> x_ticks = axis_ticks(x_max, 6);
  const double x_top = x_max > 0 ? x_max : x_ticks.back();
  while (x_ticks.size() > 1 && x_ticks.back() > x_top) x_ticks.pop_back();
  const std::vector<double> y_ticks = axis_ticks(y_max, 4);
  const double y_top = y_ticks.back();
  const int w = chart.width, h = chart.height;
  const auto column = [&](double x) { return int(std::lround(x / x_top * (w - 1))); };
  const auto row = [&](double y) { return int(std::lround(y / y_top * (h - 1))); };  // 0: bottom

  std::vector<std::string> grid(size_t(h), std::string(size_t(w), ' '));
  const auto plot = [&](int c, int r, char marker) { grid[size_t(h - 1 - r)][size_t(c)] = marker; };
  for (const AsciiSeries& s : chart.series) {
    if (s.x.size() == 1) plot(column(s.x[0]), row(s.y[0]), s.marker);
    for (size_t i = 0; i + 1 < s.x.size(); ++i) {
      const int c0 = column(s.x[i]), c1 = column(s.x[i + 1]);
      int previous = row(s.y[i]);
      for (int c = c0; c <= c1; ++c) {
        const double t = c1 == c0 ? 1.0 : double(c - c0) / double(c1 - c0);
        const int r = row(s.y[i] + t * (s.y[i + 1] - s.y[i]));
        // A steep step fills the rows between this column's cell and the previous one's.
        for (int between = std::min(r, previous); between <= std::max(r, previous); ++between) {
          plot(c, between, s.marker);
        }
        previous = r;
      }
    }
  }

  // Y labels on the rows of their ticks.
  std::vector<std::string> labels(static_cast<size_t>(h));
  size_t label_width = 0;
  for (double tick : y_ticks) {
    std::string& label = labels[size_t(h - 1 - row(tick))];
    label = tick_label(tick);
    label_width = std::max(label_width, label.size());
  }
  std::string out = chart.y_label.empty() ? "" : chart.y_label + "\n";
  for (int r = 0; r < h; ++r) {
    const bool tick = !labels[size_t(r)].empty();
    std::string& cells = grid[size_t(r)];
    cells.erase(cells.find_last_not_of(' ') + 1);
    out += fmt::format("{:>{}} {}{}\n", labels[size_t(r)], label_width, tick ? '+' : '|', cells);
  }
  // The x axis, '+' at the ticks, and the tick labels centred under them where they fit.
  std::string axis(size_t(w), '-'), tick_text(size_t(w) + 16, ' ');
  int free_from = 0;
  for (double tick : x_ticks) {
    const int c = column(tick);
    if (c > 0) axis[size_t(c)] = '+';  // column 0's tick is the corner
    const std::string label = tick_label(tick);
    const int start = std::max(0, c - int(label.size()) / 2);
    if (start < free_from) continue;
    tick_text.replace(size_t(start), label.size(), label);
    free_from = start + int(label.size()) + 1;
  }
  tick_text.erase(tick_text.find_last_not_of(' ') + 1);
  const std::string indent(label_width + 1, ' ');
  out += fmt::format("{}+{}\n{} {}\n", indent, axis, indent, tick_text);
  if (!chart.x_label.empty()) {
    const int pad = std::max(0, (w - int(chart.x_label.size())) / 2);
    out += fmt::format("{} {}{}\n", indent, std::string(size_t(pad), ' '), chart.x_label);
  }
  std::string legend;
  for (const AsciiSeries& s : chart.series) legend += fmt::format("   {} {}", s.marker, s.name);
  out += indent + legend.substr(std::min<size_t>(2, legend.size())) + "\n";
  return out;
}

}  // namespace dsa

// The SVG line chart writer: nice ticks, a well-formed document (checked by a small XML scanner
// written here: balanced tags, quoted attributes, escaped text), one polyline per series with
// dashes where asked, escaped labels, points mapped inside the plot area, and clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>
#include <vector>

#include "core/error.h"
#include "perf/svg_plot.h"
#include "support/test_util.h"

namespace dsa {
namespace {

// Checks the subset of XML the writer produces: a declaration, then elements whose tags balance,
// attributes name="value", and text with no raw '<' and only the five predefined entities.
// Returns "" if well formed, else what is wrong.
std::string xml_problem(const std::string& doc) {
  size_t pos = 0;
  if (doc.rfind("<?xml ", 0) == 0) pos = doc.find("?>") + 2;
  std::vector<std::string> open;
  const std::regex attribute(R"(\s+[a-zA-Z_:][-a-zA-Z0-9_:.]*="[^"<&]*")");
  const std::regex entity(R"(&(amp|lt|gt|quot|apos);)");
  bool root_seen = false;
  while (pos < doc.size()) {
    const size_t lt = doc.find('<', pos);
    const std::string text = doc.substr(pos, lt == std::string::npos ? lt : lt - pos);
    const std::string stripped = std::regex_replace(text, entity, "");
    if (stripped.find('&') != std::string::npos || stripped.find('>') != std::string::npos) {
      return "unescaped text: " + text;
    }
    if (open.empty() && text.find_first_not_of(" \n") != std::string::npos) {
      return "text outside the root: " + text;
    }
    if (lt == std::string::npos) break;
    const size_t gt = doc.find('>', lt);
    if (gt == std::string::npos) return "unterminated tag";
    std::string tag = doc.substr(lt + 1, gt - lt - 1);
    pos = gt + 1;
    if (tag.starts_with("/")) {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name) return "unbalanced </" + name + ">";
      open.pop_back();
      continue;
    }
    const bool self_closing = tag.ends_with("/");
    if (self_closing) tag.pop_back();
    const size_t name_end = std::min(tag.find_first_of(" \n"), tag.size());
    const std::string name = tag.substr(0, name_end);
    if (name.empty()) return "empty tag name";
    const std::string rest = std::regex_replace(tag.substr(name_end), attribute, "");
    if (rest.find_first_not_of(" \n") != std::string::npos) return "bad attributes in <" + tag;
    if (open.empty()) {
      if (root_seen) return "second root element <" + name + ">";
      root_seen = true;
    }
    if (!self_closing) open.push_back(name);
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  return root_seen ? "" : "no root element";
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

LineChart two_series_chart() {
  LineChart chart;
  chart.title = "cost <per token> & \"position\"";
  chart.x_label = "depth";
  chart.y_label = "ms";
  chart.series.push_back(
      {.name = "sparse", .x = {0, 1024, 4096}, .y = {1.5, 1.7, 2.0}, .color = "", .dashed = false});
  chart.series.push_back(
      {.name = "dense", .x = {0, 1024, 4096}, .y = {1.4, 2.5, 6.0}, .color = "", .dashed = true});
  return chart;
}

TEST(SvgPlot, NiceTicks) {
  EXPECT_EQ(nice_ticks(0, 16384), (std::vector<double>{0, 5000, 10000, 15000, 20000}));
  EXPECT_EQ(nice_ticks(0, 100), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(nice_ticks(-3, 7), (std::vector<double>{-4, -2, 0, 2, 4, 6, 8}));
  EXPECT_EQ(nice_ticks(0, 0), (std::vector<double>{0, 0.2}));  // a degenerate range still spans
  const std::vector<double> small = nice_ticks(0, 0.6);
  ASSERT_EQ(small.size(), 4u);
  for (size_t i = 0; i < small.size(); ++i) EXPECT_NEAR(small[i], 0.2 * double(i), 1e-12);
}

TEST(SvgPlot, DocumentIsWellFormed) {
  const std::string svg = render_svg(two_series_chart());
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline "), 2u);
  EXPECT_EQ(count(svg, "<circle "), 6u);  // a marker per point
  // The dashed series: its polyline and its legend line.
  EXPECT_EQ(count(svg, "stroke-dasharray"), 2u);
  EXPECT_NE(svg.find("cost &lt;per token&gt; &amp; &quot;position&quot;"), std::string::npos);
  EXPECT_NE(svg.find(">sparse</text>"), std::string::npos);
  EXPECT_NE(svg.find(">dense</text>"), std::string::npos);
  // Tick labels of both axes: x 0 .. 5000 by 1000, y 0 .. 6 by 1.
  EXPECT_NE(svg.find(">5000</text>"), std::string::npos);
  EXPECT_NE(svg.find(">6</text>"), std::string::npos);
}

TEST(SvgPlot, YAxisOverTheDataRange) {
  LineChart chart{.title = "ppl",
                  .x_label = "k",
                  .y_label = "perplexity",
                  .series = {{.name = "sparse",
                              .x = {64, 128, 256},
                              .y = {93.2, 92.0, 91.8},
                              .color = "",
                              .dashed = false}}};
  // From zero: ticks 0 .. 100 by 20.
  EXPECT_NE(render_svg(chart).find(">0</text>"), std::string::npos);
  chart.y_from_zero = false;
  const std::string svg = render_svg(chart);
  EXPECT_EQ(xml_problem(svg), "") << svg;
  // Only the data's range, in nice ticks: 91.5 .. 93.5 by 0.5, no 80 or 0 on the y axis (the x
  // axis still starts at 0).
  EXPECT_NE(svg.find(">91.5</text>"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">93.5</text>"), std::string::npos) << svg;
  EXPECT_EQ(svg.find(">80</text>"), std::string::npos) << svg;
}

TEST(SvgPlot, PointsLieInsideThePlotArea) {
  const LineChart chart = two_series_chart();
  const std::string svg = render_svg(chart);
  const std::regex circle(R"re(<circle cx="([0-9.]+)" cy="([0-9.]+)")re");
  int points = 0;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), circle); it != std::sregex_iterator();
       ++it, ++points) {
    const double x = std::stod((*it)[1]), y = std::stod((*it)[2]);
    EXPECT_GE(x, 0);
    EXPECT_LE(x, chart.width);
    EXPECT_GE(y, 0);
    EXPECT_LE(y, chart.height);
  }
  EXPECT_EQ(points, 6);
  // Larger y is drawn higher: dense at 4096 (6 ms) above dense at 0 (1.4 ms).
  const std::regex polyline(R"re(<polyline points="([^"]*)")re");
  std::smatch m;
  std::string rest = svg;
  std::vector<std::string> lines;
  while (std::regex_search(rest, m, polyline)) {
    lines.push_back(m[1]);
    rest = m.suffix();
  }
  ASSERT_EQ(lines.size(), 2u);
  double x0, y0, x1, y1, x2, y2;
  ASSERT_EQ(std::sscanf(lines[1].c_str(), "%lf,%lf %lf,%lf %lf,%lf", &x0, &y0, &x1, &y1, &x2, &y2),
            6);
  EXPECT_LT(x0, x1);
  EXPECT_LT(x1, x2);
  EXPECT_GT(y0, y2);
}

TEST(SvgPlot, WritesTheFile) {
  test::TempDir dir;
  const LineChart chart = two_series_chart();
  write_svg(dir / "cost.svg", chart);
  EXPECT_EQ(test::read_text_file(dir / "cost.svg"), render_svg(chart));
  EXPECT_THROW(write_svg(dir / "missing" / "cost.svg", chart), Error);
}

void expect_render_error(const LineChart& chart, const std::string& message) {
  try {
    render_svg(chart);
    FAIL() << "no error for " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(SvgPlot, RejectsBadCharts) {
  LineChart chart = two_series_chart();
  chart.series[1].y.pop_back();
  expect_render_error(chart, "svg plot: series 'dense' has 3 x values but 2 y values");
  chart = two_series_chart();
  chart.series[0].y[1] = std::nan("");
  expect_render_error(chart, "svg plot: series 'sparse' has a non-finite value nan");
  chart.series.clear();
  expect_render_error(chart, "svg plot: no data points");
  chart = two_series_chart();
  chart.width = 100;
  expect_render_error(chart, "svg plot: 100 x 460 pixels is too small (at least 200 x 150)");
}

}  // namespace
}  // namespace dsa

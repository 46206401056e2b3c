#include "perf/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>

#include "core/error.h"

namespace dsa {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c",
                                    "#d62728", "#9467bd", "#8c564b"};

// Plot area inside the canvas, in pixels: room for the title above, tick labels and the axis
// label below and left, and the legend on the right.
constexpr int kLeft = 80, kRight = 200, kTop = 50, kBottom = 60;

// "16384", "0.25", "1e+06": six significant digits, trailing zeros dropped.
std::string tick_label(double value) { return fmt::format("{:g}", value); }

// [min(0, smallest), largest] over one coordinate of every series, as nice ticks; the y axis
// spans [smallest, largest] alone when the chart does not start it at zero.
std::vector<double> axis_ticks(const LineChart& chart, bool x_axis) {
  const bool from_zero = x_axis || chart.y_from_zero;
  double low = from_zero ? 0 : std::numeric_limits<double>::infinity();
  double high = from_zero ? 0 : -std::numeric_limits<double>::infinity();
  for (const PlotSeries& s : chart.series) {
    for (double v : x_axis ? s.x : s.y) {
      low = std::min(low, v);
      high = std::max(high, v);
    }
  }
  return nice_ticks(low, high);
}

void check(const LineChart& chart) {
  if (chart.width < 200 || chart.height < 150) {
    fail("svg plot: {} x {} pixels is too small (at least 200 x 150)", chart.width, chart.height);
  }
  size_t points = 0;
  for (const PlotSeries& s : chart.series) {
    if (s.x.size() != s.y.size()) {
      fail("svg plot: series '{}' has {} x values but {} y values", s.name, s.x.size(), s.y.size());
    }
    for (const std::vector<double>* values : {&s.x, &s.y}) {
      for (double v : *values) {
        if (!std::isfinite(v)) fail("svg plot: series '{}' has a non-finite value {}", s.name, v);
      }
    }
    points += s.x.size();
  }
  if (points == 0) fail("svg plot: no data points");
}

}  // namespace

std::string escape_xml(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double low, double high, int target) {
  DSA_CHECK(low <= high && target >= 1, "nice_ticks({}, {}, {})", low, high, target);
  const double span = high > low ? high - low : std::max(std::abs(high), 1.0);
  const double raw = span / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  const double step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
  const double first = std::floor(low / step) * step;
  double last = std::ceil(high / step) * step;
  if (last == first) last = first + step;
  const int64_t count = std::llround((last - first) / step);
  std::vector<double> ticks;
  for (int64_t i = 0; i <= count; ++i) {
    const double v = first + double(i) * step;
    ticks.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);  // no "-0" or 1e-17 at zero
  }
  return ticks;
}

std::string render_svg(const LineChart& chart) {
  check(chart);
  const std::vector<double> xt = axis_ticks(chart, true), yt = axis_ticks(chart, false);
  const double plot_w = chart.width - kLeft - kRight, plot_h = chart.height - kTop - kBottom;
  const auto px = [&](double x) {
    return kLeft + (x - xt.front()) / (xt.back() - xt.front()) * plot_w;
  };
  const auto py = [&](double y) {
    return kTop + plot_h - (y - yt.front()) / (yt.back() - yt.front()) * plot_h;
  };

  std::string svg;
  auto out = std::back_inserter(svg);
  fmt::format_to(out,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
                 "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
                 "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
                 chart.width, chart.height);
  fmt::format_to(out,
                 "<text x=\"{:.1f}\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" "
                 "font-weight=\"bold\">{}</text>\n",
                 chart.width / 2.0, escape_xml(chart.title));
  // Grid lines and tick labels.
  for (double t : xt) {
    fmt::format_to(
        out,
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#ddd\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{3:.1f}\" text-anchor=\"middle\">{4}</text>\n",
        px(t), kTop, kTop + plot_h, kTop + plot_h + 16, tick_label(t));
  }
  for (double t : yt) {
    fmt::format_to(
        out,
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>\n"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
        kLeft, py(t), kLeft + plot_w, kLeft - 6, py(t) + 4, tick_label(t));
  }
  // Axes and their labels.
  fmt::format_to(out,
                 "<rect x=\"{}\" y=\"{}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" "
                 "stroke=\"black\"/>\n",
                 kLeft, kTop, plot_w, plot_h);
  fmt::format_to(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                 kLeft + plot_w / 2, kTop + plot_h + 40, escape_xml(chart.x_label));
  fmt::format_to(out,
                 "<text x=\"20\" y=\"{0:.1f}\" text-anchor=\"middle\" "
                 "transform=\"rotate(-90 20 {0:.1f})\">{1}</text>\n",
                 kTop + plot_h / 2, escape_xml(chart.y_label));
  // Series, each with its legend entry on the right.
  size_t palette = 0;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const PlotSeries& s = chart.series[i];
    const std::string color =
        s.color.empty() ? kPalette[palette++ % std::size(kPalette)] : escape_xml(s.color);
    const std::string dash = s.dashed ? " stroke-dasharray=\"6 4\"" : "";
    std::string points;
    for (size_t j = 0; j < s.x.size(); ++j) {
      points += fmt::format("{}{:.1f},{:.1f}", j ? " " : "", px(s.x[j]), py(s.y[j]));
    }
    fmt::format_to(out,
                   "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n",
                   points, color, dash);
    for (size_t j = 0; j < s.x.size(); ++j) {
      fmt::format_to(out, "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", px(s.x[j]),
                     py(s.y[j]), color);
    }
    const double ly = kTop + 10 + 20.0 * double(i), lx = kLeft + plot_w + 15;
    fmt::format_to(out,
                   "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" "
                   "stroke=\"{3}\" stroke-width=\"2\"{4}/>\n"
                   "<text x=\"{5:.1f}\" y=\"{6:.1f}\">{7}</text>\n",
                   lx, ly, lx + 28, color, dash, lx + 34, ly + 4, escape_xml(s.name));
  }
  svg += "</svg>\n";
  return svg;
}

void write_svg(const std::filesystem::path& path, const LineChart& chart) {
  const std::string svg = render_svg(chart);
  std::ofstream file(path, std::ios::binary);
  file << svg;
  file.close();
  if (!file) fail("{}: cannot write the plot", path.string());
}

}  // namespace dsa

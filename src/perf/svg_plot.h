// A small, dependency-free SVG line chart: title, x and y axes with "nice" ticks (1, 2 or 5 times
// a power of ten) and labels, a legend, and one polyline (with point markers) per series. Both
// axes are linear and start at 0 unless a value is negative (or the chart asks for a y axis over
// the data's range only). Used by `dsa bench --plot`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dsa {

struct PlotSeries {
  std::string name;       // legend text
  std::vector<double> x;  // data coordinates, as many as y
  std::vector<double> y;
  std::string color;  // any SVG color; empty: the palette's next one
  bool dashed = false;
};

struct LineChart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  int width = 760;  // pixels
  int height = 460;
  // false: the y axis covers only the data's range (for values like perplexities near 90, whose
  // differences a zero-based axis would flatten)
  bool y_from_zero = true;
};

// The chart as an SVG document. Throws dsa::Error if a series has x and y of different sizes or
// a non-finite value, if there is no point at all, or if the size is below 200 x 150 pixels.
std::string render_svg(const LineChart& chart);

// Writes render_svg(chart) to `path`; throws dsa::Error if the file cannot be written.
void write_svg(const std::filesystem::path& path, const LineChart& chart);

// `text` with &, <, >, " and ' as XML entities, for SVG text and attributes.
std::string escape_xml(const std::string& text);

// Tick positions covering [low, high] with about `target` steps of 1, 2 or 5 times a power of
// ten: the first tick <= low, the last >= high. Exposed for tests.
std::vector<double> nice_ticks(double low, double high, int target = 5);

}  // namespace dsa

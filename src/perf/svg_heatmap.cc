#include "perf/svg_heatmap.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "perf/svg_plot.h"

namespace dsa {
namespace {

constexpr int kCell = 64, kCellHeight = 36;  // pixels per cell
constexpr int kLeft = 110, kTop = 56, kRight = 30, kBottom = 70;

// White (t = 0) to #08306b (t = 1), linear in RGB.
std::string cell_colour(double t) {
  const auto mix = [t](int from, int to) { return int(std::lround(from + (to - from) * t)); };
  return fmt::format("#{:02x}{:02x}{:02x}", mix(255, 8), mix(255, 48), mix(255, 107));
}

void check(const HeatMap& map) {
  if (map.rows.empty() || map.columns.empty()) fail("heat map: no rows or no columns");
  if (!(map.low < map.high)) fail("heat map: the scale [{}, {}] is empty", map.low, map.high);
  if (map.values.size() != map.rows.size()) {
    fail("heat map: {} rows of values for {} row labels", map.values.size(), map.rows.size());
  }
  for (size_t r = 0; r < map.values.size(); ++r) {
    if (map.values[r].size() != map.columns.size()) {
      fail("heat map: row {} has {} values for {} columns", r, map.values[r].size(),
           map.columns.size());
    }
    for (double v : map.values[r]) {
      if (!std::isfinite(v)) fail("heat map: row {} has a non-finite value {}", r, v);
    }
  }
}

}  // namespace

std::string render_heatmap_svg(const HeatMap& map) {
  check(map);
  const int columns = int(map.columns.size()), rows = int(map.rows.size());
  const int width = kLeft + columns * kCell + kRight, height = kTop + rows * kCellHeight + kBottom;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{3}</text>\n",
      width, height, width / 2, escape_xml(map.title));
  for (int r = 0; r < rows; ++r) {
    const int y = kTop + r * kCellHeight;
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", kLeft - 8,
                       y + kCellHeight / 2 + 4, escape_xml(map.rows[size_t(r)]));
    for (int c = 0; c < columns; ++c) {
      const double value = map.values[size_t(r)][size_t(c)];
      const double t = std::clamp((value - map.low) / (map.high - map.low), 0.0, 1.0);
      const int x = kLeft + c * kCell;
      const std::string label = fmt::format("{:.{}f}", value, std::clamp(map.decimals, 0, 9));
      svg += fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#cccccc\"/>\n"
          "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
          x, y, kCell, kCellHeight, cell_colour(t), x + kCell / 2, y + kCellHeight / 2 + 4,
          t > 0.55 ? "white" : "black", escape_xml(label));
    }
  }
  const int grid_bottom = kTop + rows * kCellHeight;
  for (int c = 0; c < columns; ++c) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                       kLeft + c * kCell + kCell / 2, grid_bottom + 18,
                       escape_xml(map.columns[size_t(c)]));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     kLeft + columns * kCell / 2, grid_bottom + 44, escape_xml(map.x_label));
  svg += fmt::format(
      "<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
      "{0})\">{1}</text>\n",
      kTop + rows * kCellHeight / 2, escape_xml(map.y_label));
  svg += "</svg>\n";
  return svg;
}

void write_heatmap_svg(const std::filesystem::path& path, const HeatMap& map) {
  const std::string svg = render_heatmap_svg(map);
  std::ofstream file(path, std::ios::binary);
  file << svg;
  file.close();
  if (!file) fail("{}: cannot write the heat map", path.string());
}

}  // namespace dsa

// A small, dependency-free SVG heat map: a grid of cells coloured by value on a fixed scale (white
// at `low`, dark blue at `high`), each cell labelled with its value, row and column labels, axis
// labels and a title. Used for dsa eval's retrieval accuracy over context length x depth.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dsa {

struct HeatMap {
  std::string title;
  std::string x_label;  // the columns' axis
  std::string y_label;  // the rows' axis
  std::vector<std::string> columns;
  std::vector<std::string> rows;            // drawn top to bottom
  std::vector<std::vector<double>> values;  // [rows][columns]
  double low = 0.0;                         // the colour scale; values are clamped to it
  double high = 1.0;
  int decimals = 2;  // of each cell's label
};

// The heat map as an SVG document. Throws dsa::Error if there are no rows or columns, the values'
// shape differs from the labels', a value is not finite, or low >= high.
std::string render_heatmap_svg(const HeatMap& map);

// Writes render_heatmap_svg(map) to `path`; throws dsa::Error if it cannot be written.
void write_heatmap_svg(const std::filesystem::path& path, const HeatMap& map);

}  // namespace dsa

// The SVG heat map: one cell per value with its label, labels escaped, colours on the fixed scale,
// and errors for inconsistent input.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "perf/svg_heatmap.h"

namespace dsa {
namespace {

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

HeatMap example() {
  HeatMap map;
  map.title = "passkey <sparse> & dense";
  map.x_label = "depth";
  map.y_label = "length";
  map.columns = {"0", "0.5", "1"};
  map.rows = {"512", "1024"};
  map.values = {{0.0, 0.5, 1.0}, {0.25, 2.0, -1.0}};
  return map;
}

TEST(SvgHeatmap, OneLabelledCellPerValue) {
  const std::string svg = render_heatmap_svg(example());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(count(svg, "<rect"), 1u + 6u);  // the background and the cells
  EXPECT_NE(svg.find(">0.25<"), std::string::npos);
  EXPECT_NE(svg.find("passkey &lt;sparse&gt; &amp; dense"), std::string::npos);
  // The scale is clamped: 2.0 is drawn as 1.0 (the darkest), -1.0 as 0.0 (white).
  EXPECT_EQ(count(svg, "fill=\"#08306b\""), 2u);
  EXPECT_EQ(count(svg, "fill=\"#ffffff\""), 2u);
}

TEST(SvgHeatmap, BadInputIsAnError) {
  HeatMap map = example();
  map.values[1].pop_back();
  EXPECT_THROW(render_heatmap_svg(map), Error);
  map = example();
  map.values[0][0] = std::nan("");
  EXPECT_THROW(render_heatmap_svg(map), Error);
  map = example();
  map.low = map.high;
  EXPECT_THROW(render_heatmap_svg(map), Error);
  map = example();
  map.rows.clear();
  map.values.clear();
  EXPECT_THROW(render_heatmap_svg(map), Error);
}

}  // namespace
}  // namespace dsa

// Progress bar formatting, and silence when stderr is not a terminal.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/progress.h"

namespace dsa {
namespace {

TEST(Progress, FormatsBytesCountsAndDurations) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(uint64_t(3) << 30), "3.00 GiB");
  EXPECT_EQ(format_bytes(uint64_t(1) << 50), "1.00 PiB");
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1000), "1,000");
  EXPECT_EQ(format_count(671026522112), "671,026,522,112");
  EXPECT_EQ(format_duration(4.4), "4s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(7620), "2h07m");
}

TEST(Progress, RendersALine) {
  EXPECT_EQ(render_progress_line("write", 512, 1024, ProgressUnit::kBytes, 0.0, 10),
            "write  [#####.....]  50%  512 B / 1.00 KiB");
  // 256 B in 2 s: 128 B/s, 768 B left: 6 s.
  EXPECT_EQ(render_progress_line("write", 256, 1024, ProgressUnit::kBytes, 2.0, 4),
            "write  [#...]  25%  256 B / 1.00 KiB  128 B/s  ETA 6s");
  EXPECT_EQ(render_progress_line("items", 10, 10, ProgressUnit::kItems, 4.0, 4),
            "items  [####] 100%  10 / 10  2.5/s  in 4s");
  // More done than the total (a caller's rounding) is shown as complete, never past 100%.
  EXPECT_EQ(render_progress_line("x", 20, 10, ProgressUnit::kItems, 0.0, 2),
            "x  [##] 100%  10 / 10");
}

TEST(Progress, SilentWhenNotATerminal) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    ProgressBar bar("quiet", 100, ProgressUnit::kItems, file);
    EXPECT_FALSE(bar.enabled());
    bar.update(50);
    bar.update(100);
  }
  EXPECT_EQ(std::ftell(file), 0L);
  std::fclose(file);
}

}  // namespace
}  // namespace dsa

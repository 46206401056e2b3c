// A terminal progress bar on stderr, with rate and ETA. It draws only when the stream is a
// terminal (redrawn at most 10 times a second, one line, carriage return); in pipes, logs and
// tests it stays silent, so output never fills with bar frames.
//
//   ProgressBar bar("writing", total_bytes, ProgressUnit::kBytes);
//   ... bar.update(done_bytes); ...
//   bar.finish();  // final frame and newline (the destructor does it too)
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace dsa {

enum class ProgressUnit { kBytes, kItems };

// "0 B", "512 B", "1.50 KiB", "3.25 GiB" (binary units, 2 decimals above bytes).
std::string format_bytes(uint64_t bytes);
// "671,026,522,112": digits grouped by thousands.
std::string format_count(uint64_t count);
// "42s", "3m05s", "2h07m".
std::string format_duration(double seconds);

// One frame: "label  [#####.....]  45%  1.20 GiB / 2.67 GiB  310 MiB/s  ETA 5s", `bar_width`
// characters of bar. Exposed for tests; `elapsed_seconds` <= 0 leaves rate and ETA out.
std::string render_progress_line(const std::string& label, uint64_t done, uint64_t total,
                                 ProgressUnit unit, double elapsed_seconds, int bar_width = 30);

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total, ProgressUnit unit = ProgressUnit::kBytes,
              std::FILE* stream = stderr);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }
  // Sets the amount done so far (absolute, not a delta).
  void update(uint64_t done);
  void finish();

 private:
  void draw();

  std::string label_;
  uint64_t total_;
  ProgressUnit unit_;
  std::FILE* stream_;
  bool enabled_;
  bool finished_ = false;
  uint64_t done_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace dsa

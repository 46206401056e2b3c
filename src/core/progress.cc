#include "core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace dsa {

std::string format_bytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double value = double(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, kUnits[unit]);
}

std::string format_count(uint64_t count) {
  const std::string digits = std::to_string(count);
  std::string grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return grouped;
}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::llround(std::max(0.0, seconds)));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

namespace {
std::string format_amount(uint64_t amount, ProgressUnit unit) {
  return unit == ProgressUnit::kBytes ? format_bytes(amount) : fmt::format("{}", amount);
}
}  // namespace

std::string render_progress_line(const std::string& label, uint64_t done, uint64_t total,
                                 ProgressUnit unit, double elapsed_seconds, int bar_width) {
  done = std::min(done, total);
  const double fraction = total == 0 ? 1.0 : double(done) / double(total);
  const int filled = int(fraction * bar_width);
  std::string line = fmt::format("{}  [{}{}] {:3}%  {} / {}", label, std::string(filled, '#'),
                                 std::string(bar_width - filled, '.'), int(fraction * 100.0),
                                 format_amount(done, unit), format_amount(total, unit));
  if (elapsed_seconds > 0.0) {
    const double rate = double(done) / elapsed_seconds;
    line += unit == ProgressUnit::kBytes ? fmt::format("  {}/s", format_bytes(uint64_t(rate)))
                                         : fmt::format("  {:.1f}/s", rate);
    if (done < total && rate > 0.0) {
      line += "  ETA " + format_duration(double(total - done) / rate);
    } else if (done == total) {
      line += "  in " + format_duration(elapsed_seconds);
    }
  }
  return line;
}

ProgressBar::ProgressBar(std::string label, uint64_t total, ProgressUnit unit, std::FILE* stream)
    : label_(std::move(label)),
      total_(total),
      unit_(unit),
      stream_(stream),
      enabled_(isatty(fileno(stream)) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(uint64_t done) {
  done_ = done;
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw();
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  draw();
  std::fputc('\n', stream_);
  std::fflush(stream_);
}

void ProgressBar::draw() {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  // \r returns to the line start; \033[K clears what a longer previous frame left behind.
  fmt::print(stream_, "\r{}\033[K", render_progress_line(label_, done_, total_, unit_, elapsed));
  std::fflush(stream_);
}

}  // namespace dsa

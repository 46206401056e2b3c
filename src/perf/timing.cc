#include "perf/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"

namespace dsa {

double percentile(std::vector<double> samples, double p) {
  if (samples.empty()) fail("percentile: no samples");
  if (!(p >= 0.0 && p <= 1.0)) fail("percentile: p = {} is outside [0, 1]", p);
  std::sort(samples.begin(), samples.end());
  const double rank = p * double(samples.size() - 1);
  const size_t below = size_t(std::floor(rank));
  const size_t above = std::min(below + 1, samples.size() - 1);
  const double fraction = rank - double(below);
  return samples[below] + fraction * (samples[above] - samples[below]);
}

TimingStats summarize(const std::vector<double>& samples) {
  if (samples.empty()) fail("timing summary: no samples");
  TimingStats stats;
  stats.runs = int(samples.size());
  stats.median = percentile(samples, 0.5);
  stats.q1 = percentile(samples, 0.25);
  stats.q3 = percentile(samples, 0.75);
  stats.min = *std::min_element(samples.begin(), samples.end());
  stats.max = *std::max_element(samples.begin(), samples.end());
  return stats;
}

TimingStats scaled(const TimingStats& stats, double divisor) {
  TimingStats out = stats;
  for (double* value : {&out.median, &out.min, &out.max, &out.q1, &out.q3}) *value /= divisor;
  return out;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<double> time_runs(int warmup, int runs, const std::function<void()>& body) {
  for (int i = 0; i < warmup; ++i) body();
  std::vector<double> seconds;
  seconds.reserve(size_t(std::max(runs, 0)));
  for (int i = 0; i < runs; ++i) {
    const double start = now_seconds();
    body();
    seconds.push_back(now_seconds() - start);
  }
  return seconds;
}

}  // namespace dsa

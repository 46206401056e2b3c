// Timing statistics for benchmarks: run a body a few times after warm-up and summarize the wall
// times by their median and spread (min, max and the interquartile range), as llama-bench and
// Google Benchmark report them. Medians resist the outliers a shared machine produces.
#pragma once

#include <functional>
#include <vector>

namespace dsa {

struct TimingStats {
  int runs = 0;
  double median = 0;  // seconds
  double min = 0;
  double max = 0;
  double q1 = 0;  // 25th percentile
  double q3 = 0;  // 75th percentile

  // Half the min-max range: "median ± spread" covers every run.
  double spread() const { return (max - min) / 2; }
};

// Percentile p in [0, 1] of `samples` with linear interpolation between the closest ranks
// (NumPy's default "linear" method). Throws dsa::Error on an empty sample or p outside [0, 1].
double percentile(std::vector<double> samples, double p);

// Summary of the samples (seconds). Throws dsa::Error on an empty sample.
TimingStats summarize(const std::vector<double>& samples);

// The same statistics with every value divided by `divisor` (per-token times of a chunk).
TimingStats scaled(const TimingStats& stats, double divisor);

// Wall time in seconds of each of `runs` calls to `body`, after `warmup` untimed calls.
std::vector<double> time_runs(int warmup, int runs, const std::function<void()>& body);

// Seconds since an arbitrary fixed point (steady clock), for timing stages inside a run.
double now_seconds();

}  // namespace dsa

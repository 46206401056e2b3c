// The learning rate of each step: linear warm-up, then cosine decay to a floor
// (docs/training-engine.md, "Optimizer").
#pragma once

#include <cstdint>

namespace dsa::train {

struct LrSchedule {
  double lr = 3e-4;      // peak
  double min_lr = 3e-5;  // reached at the last step
  int64_t warmup = 0;    // steps of linear warm-up: step i < warmup gets lr * (i + 1) / warmup
  int64_t steps = 1;     // total steps N
};

// Learning rate of step `step` (0-based): lr·(i+1)/W during warm-up, then
// min_lr + (lr − min_lr)·(1 + cos(π·(i − W)/(N − 1 − W)))/2, so step N−1 gets min_lr.
double learning_rate(const LrSchedule& schedule, int64_t step);

// Throws dsa::Error naming the bad field (negative rates, min_lr > lr, warmup > steps, ...).
void validate(const LrSchedule& schedule);

}  // namespace dsa::train

#include "train/lr_schedule.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace dsa::train {

double learning_rate(const LrSchedule& s, int64_t step) {
  if (step < s.warmup) return s.lr * double(step + 1) / double(s.warmup);
  const int64_t decay_steps = s.steps - 1 - s.warmup;
  if (decay_steps <= 0) return s.lr;
  const double progress = std::min(1.0, double(step - s.warmup) / double(decay_steps));
  return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

void validate(const LrSchedule& s) {
  if (!(s.lr > 0.0) || !std::isfinite(s.lr)) fail("--lr must be a positive number, got {}", s.lr);
  if (!(s.min_lr >= 0.0) || s.min_lr > s.lr) {
    fail("--min-lr must be between 0 and --lr ({}), got {}", s.lr, s.min_lr);
  }
  if (s.steps <= 0) fail("--steps must be positive, got {}", s.steps);
  if (s.warmup < 0 || s.warmup > s.steps) {
    fail("--warmup must be between 0 and --steps ({}), got {}", s.steps, s.warmup);
  }
}

}  // namespace dsa::train

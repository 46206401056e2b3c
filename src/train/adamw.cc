#include "train/adamw.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "train/adamw_update.h"

namespace dsa::train {
namespace {

// Elements per task of the element-wise passes (and per partial sum of the norm).
constexpr int64_t kElementBlock = 1 << 16;

}  // namespace

AdamW::AdamW(std::shared_ptr<const ParameterLayout> layout, const AdamWConfig& config,
             const std::function<bool(const TrainTensor&)>& selected)
    : config_(config), m_(layout), v_(layout) {
  const std::vector<TrainTensor>& tensors = layout->tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].trainable && (!selected || selected(tensors[i]))) selected_.push_back(i);
  }
}

void AdamW::step(ParameterBuffer& params, const ParameterBuffer& grads, double lr,
                 ThreadPool& pool) {
  DSA_CHECK(
      params.layout().size() == m_.layout().size() && grads.layout().size() == m_.layout().size(),
      "AdamW: buffers of another layout");
  ++steps_;
  AdamWCoefficients c;
  c.lr = lr;
  c.beta1 = config_.beta1;
  c.beta2 = config_.beta2;
  c.eps = config_.eps;
  c.bias_correction1 = 1.0 - std::pow(c.beta1, double(steps_));
  c.bias_correction2 = 1.0 - std::pow(c.beta2, double(steps_));
  const std::vector<TrainTensor>& tensors = params.layout().tensors();
  for (size_t index : selected_) {
    const TrainTensor& t = tensors[index];
    float* p = params.values().data() + t.offset;
    const float* g = grads.values().data() + t.offset;
    float* m = m_.values().data() + t.offset;
    float* v = v_.values().data() + t.offset;
    AdamWCoefficients ct = c;
    ct.decay = t.weight_decay ? lr * config_.weight_decay : 0.0;
    // Element-wise, so the split over threads cannot change a result.
    pool.parallel_for(t.numel(), kElementBlock, [&](int64_t begin, int64_t end) {
      adamw_update(ct, p + begin, g + begin, m + begin, v + begin, end - begin);
    });
  }
}

double gradient_norm(const ParameterBuffer& grads, const std::vector<size_t>& tensors,
                     ThreadPool& pool) {
  // Blocks of kElementBlock elements of each tensor, each summed in 8 interleaved double
  // partial sums (so the compiler can vectorise), then all in order: the blocks are fixed by
  // the sizes, so the norm does not depend on the thread count.
  const std::vector<TrainTensor>& all = grads.layout().tensors();
  std::vector<std::pair<const float*, int64_t>> blocks;
  for (size_t index : tensors) {
    const float* g = grads.values().data() + all[index].offset;
    const int64_t n = all[index].numel();
    for (int64_t b = 0; b < n; b += kElementBlock) {
      blocks.emplace_back(g + b, std::min(kElementBlock, n - b));
    }
  }
  std::vector<double> sums(blocks.size());
  pool.parallel_for(int64_t(blocks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const auto [g, n] = blocks[size_t(b)];
      double lanes[8] = {};
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; ++l) lanes[l] += double(g[i + l]) * double(g[i + l]);
      }
      for (; i < n; ++i) lanes[0] += double(g[i]) * double(g[i]);
      double sum = 0.0;
      for (double lane : lanes) sum += lane;
      sums[size_t(b)] = sum;
    }
  });
  double total = 0.0;
  for (double s : sums) total += s;
  return std::sqrt(total);
}

void clip_gradients(ParameterBuffer& grads, const std::vector<size_t>& tensors, double norm,
                    double clip, ThreadPool& pool) {
  if (!(clip > 0.0) || norm <= clip) return;
  const float factor = float(clip / (norm + 1e-6));
  const std::vector<TrainTensor>& all = grads.layout().tensors();
  for (size_t index : tensors) {
    float* g = grads.values().data() + all[index].offset;
    pool.parallel_for(all[index].numel(), kElementBlock, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) g[i] *= factor;
    });
  }
}

void zero_gradients(ParameterBuffer& grads, ThreadPool& pool) {
  float* g = grads.values().data();
  pool.parallel_for(int64_t(grads.values().size()), kElementBlock,
                    [&](int64_t begin, int64_t end) { std::fill(g + begin, g + end, 0.0f); });
}

}  // namespace dsa::train

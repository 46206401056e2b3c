// Perplexity of a token sequence, in the manner of llama-perplexity, for one or more attention
// modes, and how far sparse attention's next-token distributions are from dense attention's.
//
// Windows. The tokens are cut into floor(N / context) consecutive, non-overlapping windows of
// `context` tokens (a remainder shorter than a window is left out). Each window runs from an empty
// cache, so every window is scored with the same amount of context whatever came before it.
// Scoring rule: the second half of each window, i.e. the tokens at window positions
// [context/2, context), each predicted from every token before it in the window (at least
// context/2 of them). llama.cpp scores one token fewer (positions context/2 + 1 .. context - 1);
// the difference is one token per window.
//
// Per mode and scored token: NLL = -log softmax(logits)[target], the log-softmax in double. PPL =
// exp(mean NLL); its error is llama.cpp's: the standard error of the mean NLL (sample standard
// deviation / sqrt(n)) carried through exp, PPL * sem.
//
// Against dense: for every other mode m, per scored token KL(dense || m) = sum_v p_dense(v) *
// (log p_dense(v) - log p_m(v)) in nats (log-softmax in double), its mean with the standard error
// of the mean and its maximum, and top-1 agreement: the fraction of tokens whose highest logit is
// the same token in both modes, with its binomial standard error sqrt(a (1 - a) / n).
//
// All modes run side by side, one forward chunk of each at a time, so only chunk x vocab logits
// per mode are held, whatever the text's length.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"

namespace dsa {

struct PerplexityConfig {
  int64_t context = 512;  // tokens per window (llama.cpp's n_ctx)
  int64_t chunk = 512;    // tokens per forward call (llama.cpp's n_batch)
  std::vector<AttentionMode> modes = {AttentionMode::kSparse, AttentionMode::kDense};
  // When set, the first token of every window is replaced by it, as llama.cpp does for models
  // that expect a BOS token (that position is never scored).
  std::optional<int32_t> bos;
};

// Throws dsa::Error naming the field: context < 2 or beyond the model's max_position_embeddings,
// chunk < 1, no modes or a repeated one, sparse on a model without an indexer, a BOS id outside
// the vocabulary, or fewer than 2 windows of tokens (saying how many are needed).
void validate(const PerplexityConfig& config, const ModelConfig& model, int64_t n_tokens);

// Mean and standard error of the mean of a stream of values (Welford's update, in double).
class RunningMean {
 public:
  void add(double x);
  int64_t count() const { return count_; }
  double mean() const { return mean_; }
  double max() const { return max_; }
  // Sample standard deviation / sqrt(count); 0 for fewer than 2 values.
  double standard_error() const;

 private:
  int64_t count_ = 0;
  double mean_ = 0;
  double m2_ = 0;  // sum of squared deviations from the mean
  double max_ = 0;
};

struct ModePerplexity {
  AttentionMode mode = AttentionMode::kDense;
  RunningMean nll;         // per scored token, nats
  double seconds = 0;      // wall time of this mode's forward calls
  int64_t tokens_run = 0;  // tokens through the forward pass (context - 1 per window)

  double perplexity() const;        // exp(mean NLL)
  double perplexity_error() const;  // perplexity() * standard error of the mean NLL
};

struct ModeComparison {
  AttentionMode mode = AttentionMode::kSparse;  // compared against dense
  RunningMean kl;                               // KL(dense || mode) per scored token, nats
  int64_t top1_same = 0;                        // tokens with the same argmax in both modes

  double top1_agreement() const;  // fraction in [0, 1]
  double top1_error() const;      // binomial standard error of that fraction
};

struct PerplexityResult {
  int64_t windows = 0;
  int64_t scored_per_window = 0;            // context - context/2
  std::vector<ModePerplexity> modes;        // in config order
  std::vector<ModeComparison> comparisons;  // every non-dense mode when dense is run
};

// `done` of `total` forward tokens (over all modes) have run.
using PerplexityProgress = std::function<void(int64_t done, int64_t total)>;

// Validates, then scores every window of `tokens` (ids must be inside the vocabulary).
PerplexityResult run_perplexity(const Model& model, std::span<const int32_t> tokens,
                                const PerplexityConfig& config, ThreadPool& pool,
                                const PerplexityProgress& progress = {});

// log(sum_v exp(logits[v])) in double, with the maximum subtracted first.
double log_sum_exp(std::span<const float> logits);

}  // namespace dsa

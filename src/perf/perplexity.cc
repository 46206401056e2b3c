#include "perf/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "core/error.h"

namespace dsa {
namespace {

// What one scored token contributes, per mode (nll, argmax) and per comparison (kl).
struct RowScores {
  std::vector<double> nll;
  std::vector<int64_t> argmax;
  std::vector<double> kl;
};

int64_t argmax(std::span<const float> logits) {
  return std::max_element(logits.begin(), logits.end()) - logits.begin();
}

// KL(p || q) for p = softmax(x_p), q = softmax(x_q), from exp(x_p - max) (`p_exp`, summing to
// `p_sum`) and both log-sum-exps: sum_v p(v) * ((x_p(v) - x_q(v)) - (lse_p - lse_q)). Each term
// subtracts the two log-sum-exps from the logit difference before weighting, so identical inputs
// give exactly 0 and near-identical ones lose nothing to cancellation between large sums.
double kl_divergence(std::span<const double> p_exp, double p_sum, std::span<const float> x_p,
                     double lse_p, std::span<const float> x_q, double lse_q) {
  const double shift = lse_p - lse_q;
  double kl = 0;
  for (size_t v = 0; v < x_p.size(); ++v) {
    kl += p_exp[v] * ((double(x_p[v]) - double(x_q[v])) - shift);
  }
  return kl / p_sum;
}

}  // namespace

double log_sum_exp(std::span<const float> logits) {
  DSA_CHECK(!logits.empty());
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(double(x) - max);
  return max + std::log(sum);
}

void RunningMean::add(double x) {
  max_ = count_ == 0 ? x : std::max(max_, x);
  ++count_;
  const double delta = x - mean_;
  mean_ += delta / double(count_);
  m2_ += delta * (x - mean_);
}

double RunningMean::standard_error() const {
  if (count_ < 2) return 0;
  return std::sqrt(m2_ / double(count_ - 1) / double(count_));
}

double ModePerplexity::perplexity() const { return std::exp(nll.mean()); }

double ModePerplexity::perplexity_error() const { return perplexity() * nll.standard_error(); }

double ModeComparison::top1_agreement() const {
  return kl.count() == 0 ? 0 : double(top1_same) / double(kl.count());
}

double ModeComparison::top1_error() const {
  if (kl.count() == 0) return 0;
  const double a = top1_agreement();
  return std::sqrt(a * (1 - a) / double(kl.count()));
}

void validate(const PerplexityConfig& config, const ModelConfig& model, int64_t n_tokens) {
  if (config.context < 2) fail("perplexity: context {} (-c) must be at least 2", config.context);
  if (config.context > model.max_position_embeddings) {
    fail("perplexity: context {} (-c) exceeds the model's max_position_embeddings ({})",
         config.context, model.max_position_embeddings);
  }
  if (config.chunk < 1) fail("perplexity: chunk {} (-b) must be at least 1", config.chunk);
  if (config.modes.empty()) fail("perplexity: no attention modes given (--attention)");
  for (size_t i = 0; i < config.modes.size(); ++i) {
    const AttentionMode mode = config.modes[i];
    if (std::find(config.modes.begin(), config.modes.begin() + ptrdiff_t(i), mode) !=
        config.modes.begin() + ptrdiff_t(i)) {
      fail("perplexity: attention mode '{}' (--attention) is given twice",
           attention_mode_name(mode));
    }
    if (mode == AttentionMode::kSparse && !model.has_indexer()) {
      fail(
          "perplexity: attention mode 'sparse' (--attention) needs a V3.2 model with an indexer; "
          "this one is {} (use --attention dense)",
          architecture_name(model.architecture));
    }
  }
  if (config.bos && (*config.bos < 0 || *config.bos >= model.vocab_size)) {
    fail("perplexity: BOS token {} is outside the model's vocabulary ({})", *config.bos,
         model.vocab_size);
  }
  if (n_tokens < 2 * config.context) {
    fail(
        "perplexity: the text has {} tokens, fewer than 2 windows of {} (-c): at least {} tokens "
        "are needed (give a longer text or a smaller -c)",
        n_tokens, config.context, 2 * config.context);
  }
}

PerplexityResult run_perplexity(const Model& model, std::span<const int32_t> tokens,
                                const PerplexityConfig& config, ThreadPool& pool,
                                const PerplexityProgress& progress) {
  const ModelConfig& c = model.config();
  validate(config, c, int64_t(tokens.size()));
  const int64_t ctx = config.context, half = ctx / 2, vocab = c.vocab_size;
  const size_t n_modes = config.modes.size();
  // Only positions 0 .. ctx-2 run: the last token of a window is a target, never an input.
  const int64_t run_length = ctx - 1;
  const int64_t chunk = std::min(config.chunk, run_length);

  PerplexityResult result;
  result.windows = int64_t(tokens.size()) / ctx;
  result.scored_per_window = ctx - half;
  const auto dense_it = std::find(config.modes.begin(), config.modes.end(), AttentionMode::kDense);
  const bool has_dense = dense_it != config.modes.end();
  const size_t dense = size_t(dense_it - config.modes.begin());
  std::vector<size_t> compared;  // mode indices compared against dense
  for (size_t m = 0; m < n_modes; ++m) {
    result.modes.push_back({.mode = config.modes[m], .nll = {}, .seconds = 0, .tokens_run = 0});
    if (has_dense && m != dense) {
      compared.push_back(m);
      result.comparisons.push_back({.mode = config.modes[m], .kl = {}, .top1_same = 0});
    }
  }

  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<std::vector<float>> logits(n_modes, std::vector<float>(size_t(chunk * vocab)));
  std::vector<ForwardOptions> options(n_modes);
  for (size_t m = 0; m < n_modes; ++m) {
    caches.push_back(std::make_unique<KvCache>(c, run_length));
    options[m].attention = config.modes[m];
  }
  std::vector<RowScores> rows(static_cast<size_t>(chunk));
  for (RowScores& row : rows) {
    row.nll.resize(n_modes);
    row.argmax.resize(n_modes);
    row.kl.resize(compared.size());
  }

  const int64_t total = result.windows * run_length * int64_t(n_modes);
  int64_t done = 0;
  if (progress) progress(0, total);
  std::vector<int32_t> window(static_cast<size_t>(ctx));
  for (int64_t w = 0; w < result.windows; ++w) {
    std::copy_n(tokens.begin() + w * ctx, ctx, window.begin());
    if (config.bos) window[0] = *config.bos;
    for (auto& cache : caches) cache->truncate(0);
    for (int64_t pos = 0; pos < run_length; pos += chunk) {
      const int64_t n = std::min(chunk, run_length - pos);
      // Row i holds the logits at position pos + i, which predict window[pos + i + 1]; scored
      // targets are positions >= half, so rows from half - 1 - pos on. A chunk with none of them
      // needs only its last row (the cache is all that matters).
      const int64_t first_row = std::max<int64_t>(0, half - 1 - pos);
      const bool scored = first_row < n;
      for (size_t m = 0; m < n_modes; ++m) {
        options[m].all_logits = scored;
        const auto start = std::chrono::steady_clock::now();
        model.forward(std::span(window).subspan(size_t(pos), size_t(n)), *caches[m],
                      std::span(logits[m]).first(size_t((scored ? n : 1) * vocab)), options[m],
                      pool);
        result.modes[m].seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        result.modes[m].tokens_run += n;
        done += n;
        if (progress) progress(done, total);
      }
      if (!scored) continue;
      pool.parallel_for(n - first_row, 1, [&](int64_t begin, int64_t end) {
        std::vector<double> dense_exp(static_cast<size_t>(vocab));
        std::vector<double> lse(n_modes);
        for (int64_t r = first_row + begin; r < first_row + end; ++r) {
          const int32_t target = window[size_t(pos + r + 1)];
          RowScores& row = rows[size_t(r)];
          double dense_sum = 0;
          for (size_t m = 0; m < n_modes; ++m) {
            const std::span<const float> x(logits[m].data() + r * vocab, size_t(vocab));
            if (has_dense && m == dense) {
              // The one exp pass of the dense row is kept for the KL terms.
              const double max = *std::max_element(x.begin(), x.end());
              for (int64_t v = 0; v < vocab; ++v) {
                dense_exp[size_t(v)] = std::exp(double(x[size_t(v)]) - max);
                dense_sum += dense_exp[size_t(v)];
              }
              lse[m] = max + std::log(dense_sum);
            } else {
              lse[m] = log_sum_exp(x);
            }
            row.nll[m] = lse[m] - double(x[size_t(target)]);
            row.argmax[m] = argmax(x);
          }
          for (size_t k = 0; k < compared.size(); ++k) {
            const size_t m = compared[k];
            row.kl[k] = kl_divergence(dense_exp, dense_sum,
                                      {logits[dense].data() + r * vocab, size_t(vocab)}, lse[dense],
                                      {logits[m].data() + r * vocab, size_t(vocab)}, lse[m]);
          }
        }
      });
      // Accumulated in token order, so the result does not depend on the thread count.
      for (int64_t r = first_row; r < n; ++r) {
        const RowScores& row = rows[size_t(r)];
        for (size_t m = 0; m < n_modes; ++m) result.modes[m].nll.add(row.nll[m]);
        for (size_t k = 0; k < compared.size(); ++k) {
          result.comparisons[k].kl.add(row.kl[k]);
          if (row.argmax[compared[k]] == row.argmax[dense]) ++result.comparisons[k].top1_same;
        }
      }
    }
  }
  return result;
}

}  // namespace dsa

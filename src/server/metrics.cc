#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace dsa::server {
namespace {

// Bucket bounds in seconds, as vLLM's (they span a tiny CPU model and a 671B one alike).
const std::vector<double> kTtftBounds = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                         0.1,   0.25,  0.5,  0.75, 1.0,  2.5,  5.0,
                                         7.5,   10.0,  20.0, 40.0, 80.0};
const std::vector<double> kItlBounds = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.04,
                                        0.06,  0.08,   0.1,   0.2,    0.3,  0.4,  0.5,
                                        0.75,  1.0,    2.5,   5.0,    10.0};
const std::vector<double> kE2eBounds = {0.3,  0.5,   0.8,   1.0,   1.5,  2.0,  2.5,
                                        5.0,  10.0,  15.0,  20.0,  30.0, 40.0, 50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0};

std::string number(double x) { return fmt::format("{}", x); }

void counter(std::string& out, const std::string& name, const std::string& help, uint64_t value) {
  out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, value);
}

template <typename T>
void gauge(std::string& out, const std::string& name, const std::string& help, T value) {
  out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, value);
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t bucket =
      size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, number(bounds_[i]), cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, number(sum_), name, count_);
}

Metrics::Metrics() : ttft_(kTtftBounds), itl_(kItlBounds), e2e_(kE2eBounds) {}

void Metrics::request_finished(const std::string& finish_reason, int64_t prompt_tokens,
                               int64_t generated_tokens, double e2e_seconds) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += uint64_t(std::max<int64_t>(0, prompt_tokens));
  generation_tokens_ += uint64_t(std::max<int64_t>(0, generated_tokens));
  e2e_.observe(e2e_seconds);
  for (auto& [reason, count] : finished_) {
    if (reason == finish_reason) {
      ++count;
      return;
    }
  }
  finished_.emplace_back(finish_reason, 1);
}

void Metrics::time_to_first_token(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::inter_token(double seconds) {
  std::lock_guard lock(mutex_);
  itl_.observe(seconds);
}

void Metrics::request_rejected() {
  std::lock_guard lock(mutex_);
  ++rejected_;
}

void Metrics::prefix_lookup(int64_t prompt_tokens, int64_t reused) {
  std::lock_guard lock(mutex_);
  prefix_queries_ += uint64_t(prompt_tokens);
  prefix_hits_ += uint64_t(reused);
}

std::string Metrics::render(int64_t running, int64_t waiting, const CacheGauges& cache) const {
  std::lock_guard lock(mutex_);
  std::string out;
  gauge(out, "dsa:num_requests_running", "Requests generating now.", running);
  gauge(out, "dsa:num_requests_waiting", "Requests queued, not yet generating.", waiting);
  counter(out, "dsa:num_requests_rejected_total", "Requests refused with 429 (queue full).",
          rejected_);
  const double usage =
      cache.tokens_capacity > 0 ? double(cache.tokens_used) / double(cache.tokens_capacity) : 0.0;
  gauge(out, "dsa:kv_cache_usage_perc",
        "Fraction of the KV caches' tokens held by running requests.", number(usage));
  gauge(out, "dsa:kv_cache_tokens", "Tokens held in the KV caches.", cache.tokens_used);
  gauge(out, "dsa:kv_cache_capacity_tokens",
        "Tokens the KV caches hold at most (-c times --parallel).", cache.tokens_capacity);
  gauge(out, "dsa:kv_cache_bytes", "Memory allocated for the KV caches.", cache.bytes);
  gauge(out, "dsa:prefix_cache_tokens",
        "Tokens idle slots keep cached for prompts that begin the same way.", cache.prefix_tokens);
  counter(out, "dsa:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
          prefix_queries_);
  counter(out, "dsa:prefix_cache_hits_total",
          "Prompt tokens found in the prefix cache (not computed again).", prefix_hits_);
  counter(out, "dsa:prompt_tokens_total",
          "Prompt tokens of finished requests (cancelled ones included).", prompt_tokens_);
  counter(out, "dsa:generation_tokens_total",
          "Tokens generated by finished requests (cancelled ones included).", generation_tokens_);
  out +=
      "# HELP dsa:request_success_total Finished requests by finish reason.\n"
      "# TYPE dsa:request_success_total counter\n";
  for (const auto& [reason, count] : finished_) {
    out += fmt::format("dsa:request_success_total{{finished_reason=\"{}\"}} {}\n", reason, count);
  }
  ttft_.render(out, "dsa:time_to_first_token_seconds",
               "From the request's arrival to its first text, queueing included.");
  itl_.render(out, "dsa:inter_token_latency_seconds", "Between successive pieces of text.");
  e2e_.render(out, "dsa:e2e_request_latency_seconds", "From arrival to the last token.");
  return out;
}

}  // namespace dsa::server

// What GET /metrics reports, in Prometheus' text format, under the names vLLM's users know
// (with the prefix dsa: instead of vllm:). Thread-safe: the engine's worker records, any
// connection thread renders.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace dsa::server {

// A Prometheus histogram: cumulative counts per upper bound, plus +Inf, the sum and the count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // The exposition lines of `name` (with its # HELP and # TYPE lines).
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// The state of the engine's KV caches (one per slot) when the metrics are read.
struct CacheGauges {
  int64_t tokens_used = 0;      // tokens of the running sequences
  int64_t tokens_capacity = 0;  // the slots' context sizes added up
  uint64_t bytes = 0;           // memory allocated for the caches
  int64_t prefix_tokens = 0;    // tokens kept by idle slots for the prefix cache
};

class Metrics {
 public:
  Metrics();

  void request_finished(const std::string& finish_reason, int64_t prompt_tokens,
                        int64_t generated_tokens, double e2e_seconds);
  void time_to_first_token(double seconds);
  void inter_token(double seconds);
  void request_rejected();  // 429
  // A prompt of `prompt_tokens` began with `reused` tokens already in its slot's cache.
  void prefix_lookup(int64_t prompt_tokens, int64_t reused);

  std::string render(int64_t running, int64_t waiting, const CacheGauges& cache) const;

 private:
  mutable std::mutex mutex_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generation_tokens_ = 0;
  uint64_t rejected_ = 0;
  uint64_t prefix_queries_ = 0;
  uint64_t prefix_hits_ = 0;
  std::vector<std::pair<std::string, uint64_t>> finished_;  // by finish reason
  Histogram ttft_;
  Histogram itl_;
  Histogram e2e_;
};

}  // namespace dsa::server

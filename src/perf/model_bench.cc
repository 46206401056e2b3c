#include "perf/model_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <span>
#include <sstream>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/attention/latent_cache.h"

namespace dsa {
namespace {

// splitmix64: a tiny, well-mixed generator; one stream per (layer, position) keeps the synthetic
// cache independent of how the pool splits the work.
struct SplitMix {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-limit, limit), rounded to bf16 as the forward pass's values are.
  float uniform_bf16(float limit) {
    const double unit = double(next() >> 11) * 0x1.0p-53;  // [0, 1)
    return round_to_bf16(float((2 * unit - 1) * limit));
  }
};

// Token ids for the tests and the real-prefill fill: spread over the vocabulary, fixed.
std::vector<int32_t> bench_tokens(int64_t count, int64_t first, int64_t vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    tokens[size_t(i)] = int32_t((uint64_t(first + i) * 2654435761ull) % uint64_t(vocab));
  }
  return tokens;
}

void fill_by_prefill(const Model& model, KvCache& cache, int64_t depth, int64_t chunk,
                     const ForwardOptions& options, ThreadPool& pool, std::span<float> logits,
                     const std::string& label, const FillProgress& progress) {
  cache.truncate(0);
  const std::vector<int32_t> tokens = bench_tokens(depth, 0, model.config().vocab_size);
  if (progress) progress(label, 0, depth);
  for (int64_t pos = 0; pos < depth; pos += chunk) {
    const int64_t n = std::min(chunk, depth - pos);
    model.forward(std::span(tokens).subspan(size_t(pos), size_t(n)), cache, logits, options, pool);
    if (progress) progress(label, pos + n, depth);
  }
}

// Parses the number after `key` in a /proc file of "key: value" lines; -1 if absent.
double proc_field(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream rest(line.substr(key.size()));
    double value = -1;
    rest >> value;
    return rest ? value : -1;
  }
  return -1;
}

}  // namespace

std::string_view model_bench_test_name(ModelBenchTest test) {
  return test == ModelBenchTest::kPrompt ? "pp" : "tg";
}

void validate(const ModelBenchConfig& config, const ModelConfig& model) {
  if (config.depths.empty()) fail("bench: no depths given (-d)");
  for (int64_t depth : config.depths) {
    if (depth < 0) fail("bench: depth {} (-d) must be at least 0", depth);
  }
  if (config.n_prompt < 0) fail("bench: n_prompt {} (-p) must be at least 0", config.n_prompt);
  if (config.n_gen < 0) fail("bench: n_gen {} (-n) must be at least 0", config.n_gen);
  if (config.n_prompt == 0 && config.n_gen == 0) {
    fail("bench: n_prompt (-p) and n_gen (-n) are both 0: nothing to measure");
  }
  if (config.runs < 1) fail("bench: runs {} (-r) must be at least 1", config.runs);
  if (config.fill_chunk < 1) fail("bench: fill_chunk {} must be at least 1", config.fill_chunk);
  if (config.modes.empty()) fail("bench: no attention modes given (--attention)");
  for (size_t i = 0; i < config.modes.size(); ++i) {
    const AttentionMode mode = config.modes[i];
    if (std::find(config.modes.begin(), config.modes.begin() + ptrdiff_t(i), mode) !=
        config.modes.begin() + ptrdiff_t(i)) {
      fail("bench: attention mode '{}' (--attention) is given twice", attention_mode_name(mode));
    }
    if (mode == AttentionMode::kSparse && !model.has_indexer()) {
      fail(
          "bench: attention mode 'sparse' (--attention) needs a V3.2 model with an indexer; this "
          "one is {}",
          architecture_name(model.architecture));
    }
  }
  const int64_t capacity = model_bench_capacity(config);
  if (capacity > model.max_position_embeddings) {
    fail(
        "bench: max depth {} + n_prompt {} + n_gen {} = {} positions exceed the model's "
        "max_position_embeddings ({}); lower -d, -p or -n",
        capacity - config.n_prompt - config.n_gen, config.n_prompt, config.n_gen, capacity,
        model.max_position_embeddings);
  }
}

int64_t model_bench_capacity(const ModelBenchConfig& config) {
  const int64_t max_depth =
      config.depths.empty() ? 0 : *std::max_element(config.depths.begin(), config.depths.end());
  return max_depth + config.n_prompt + config.n_gen;
}

TimingStats ModelBenchResult::seconds_per_token() const {
  return scaled(summarize(run_seconds), double(n_tokens));
}

TimingStats ModelBenchResult::tokens_per_second() const {
  std::vector<double> rates;
  for (double seconds : run_seconds) rates.push_back(double(n_tokens) / seconds);
  return summarize(rates);
}

std::string ModelBenchResult::test_label() const {
  const std::string base = fmt::format("{}{}", model_bench_test_name(test), n_tokens);
  return depth == 0 ? base : fmt::format("{} @ d{}", base, depth);
}

void fill_synthetic_cache(const ModelConfig& model, KvCache& cache, int64_t depth, uint64_t seed,
                          ThreadPool& pool) {
  DSA_CHECK(cache.size() == 0 && depth >= 0 && depth <= cache.capacity(),
            "synthetic fill of {} positions into a cache of {} / {}", depth, cache.size(),
            cache.capacity());
  const LatentDims dims = cache.latent_dims();
  const bool has_index = model.has_indexer();
  const int64_t index_dim = model.index_head_dim;  // codes are [capacity, index_dim]
  const int64_t items = cache.layers() * depth;
  pool.parallel_for(items, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> latent(size_t(dims.latent)), rope(size_t(dims.rope));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t layer = item / depth, pos = item % depth;
      SplitMix rng{seed ^ (uint64_t(item) * 0xd1b54a32d192ed03ull)};
      // After kv_norm the latent has unit RMS times the norm weight: ±2 covers that range.
      for (float& x : latent) x = rng.uniform_bf16(2.0f);
      for (float& x : rope) x = rng.uniform_bf16(1.0f);
      pack_latent_token(latent, rope, LatentCacheFormat::kFp8, ScaleFormat::kUe8m0,
                        cache.latent_token(layer, pos));
      if (!has_index) continue;
      fp8_e4m3* codes = cache.index_codes(layer) + pos * index_dim;
      for (int64_t i = 0; i < index_dim; i += 8) {
        uint64_t bits = rng.next();
        for (int64_t j = 0; j < 8 && i + j < index_dim; ++j, bits >>= 8) {
          uint8_t code = uint8_t(bits);
          if ((code & 0x7f) == 0x7f) code ^= 1;  // S.1111.111 is NaN: use the largest finite
          codes[i + j] = fp8_e4m3{code};
        }
      }
      // ue8m0 scales as the indexer writes them; 2^-7 .. 2^-9 give keys of magnitude <= 3.5.
      cache.index_scales(layer)[pos] = std::ldexp(1.0f, -7 - int(rng.next() % 3));
    }
  });
  cache.advance_to(depth);
}

std::vector<ModelBenchResult> run_model_bench(const Model& model, const ModelBenchConfig& config,
                                              ThreadPool& pool, const FillProgress& progress) {
  const ModelConfig& c = model.config();
  validate(config, c);
  KvCache cache(c, model_bench_capacity(config));
  std::vector<float> logits(size_t(c.vocab_size));
  std::vector<int64_t> depths = config.depths;
  std::sort(depths.begin(), depths.end(), std::greater<>());
  depths.erase(std::unique(depths.begin(), depths.end()), depths.end());
  const int64_t max_depth = depths.front();
  // Fill tokens are ids 0 .. max_depth-1 of bench_tokens; test tokens continue after them.
  const std::vector<int32_t> prompt = bench_tokens(config.n_prompt, max_depth, c.vocab_size);
  const std::vector<int32_t> generated =
      bench_tokens(config.n_gen, max_depth + config.n_prompt, c.vocab_size);

  std::vector<ModelBenchResult> results;
  for (AttentionMode mode : config.modes) {
    ForwardOptions options;
    options.attention = mode;
    if (config.synthetic_cache) {
      // The same contents for every mode (earlier modes' runs overwrote some positions).
      cache.truncate(0);
      fill_synthetic_cache(c, cache, max_depth, config.seed, pool);
    } else {
      fill_by_prefill(model, cache, max_depth, config.fill_chunk, options, pool, logits,
                      fmt::format("fill {}", attention_mode_name(mode)), progress);
    }
    // Largest depth first: a run writes only positions >= its depth, so every smaller depth
    // still finds the fill's contents below it.
    for (int64_t depth : depths) {
      if (config.n_prompt > 0) {
        ModelBenchResult r{.mode = mode,
                           .depth = depth,
                           .test = ModelBenchTest::kPrompt,
                           .n_tokens = config.n_prompt,
                           .run_seconds = {}};
        // truncate() only resets the size, so timing it with the forward call costs nothing.
        r.run_seconds = time_runs(1, config.runs, [&] {
          cache.truncate(depth);
          model.forward(prompt, cache, logits, options, pool);
        });
        results.push_back(std::move(r));
      }
      if (config.n_gen > 0) {
        ModelBenchResult r{.mode = mode,
                           .depth = depth,
                           .test = ModelBenchTest::kGenerate,
                           .n_tokens = config.n_gen,
                           .run_seconds = {}};
        r.run_seconds = time_runs(1, config.runs, [&] {
          cache.truncate(depth);
          for (const int32_t& token : generated) {
            model.forward(std::span(&token, 1), cache, logits, options, pool);
          }
        });
        results.push_back(std::move(r));
      }
    }
  }
  const auto mode_rank = [&](AttentionMode mode) {
    return std::find(config.modes.begin(), config.modes.end(), mode) - config.modes.begin();
  };
  std::stable_sort(results.begin(), results.end(),
                   [&](const ModelBenchResult& a, const ModelBenchResult& b) {
                     if (a.mode != b.mode) return mode_rank(a.mode) < mode_rank(b.mode);
                     if (a.depth != b.depth) return a.depth < b.depth;
                     return a.test < b.test;
                   });
  return results;
}

uint64_t peak_rss_bytes() {
  const double kib = proc_field("/proc/self/status", "VmHWM:");
  return kib < 0 ? 0 : uint64_t(kib) * 1024;
}

double load_average_1m() {
  std::ifstream in("/proc/loadavg");
  double value = -1;
  in >> value;
  return in ? value : -1;
}

}  // namespace dsa

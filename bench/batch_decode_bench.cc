// Batched decode throughput, after llama.cpp's llama-batched-bench: B sequences, each with
// `depth` cached tokens, decode one token each per Model::forward_batch step. Reports the step
// time and the aggregate decode tokens/s at each B, and the ratio against B = 1 measured in the
// same run; with --solo it also times B separate forward() calls per step (no batching), the
// baseline batching must beat. Median of --runs timed runs of --steps steps each.
//
//   build/release/bench/batch_decode_bench -m DIR [-t N] [--depth D] [--batches 1,4,16,32]
//       [--steps N] [--runs R] [--attention auto|sparse|dense] [--solo]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "perf/timing.h"

namespace dsa {
namespace {

struct Options {
  std::string model_dir;
  int threads = 2;
  int64_t depth = 512;
  std::vector<int64_t> batches = {1, 4, 16, 32};
  int steps = 16;
  int runs = 5;
  std::string attention = "auto";
  bool solo = false;
};

int run(const Options& o) {
  ThreadPool pool(size_t(o.threads));
  const auto model = Model::load(o.model_dir, pool);
  const ModelConfig& c = model->config();
  ForwardOptions options;
  options.attention = parse_attention_mode(o.attention);
  const int64_t vocab = c.vocab_size;
  fmt::print("model {} ({} layers, hidden {}), depth {}, {} threads, attention {}\n", o.model_dir,
             c.num_hidden_layers, c.hidden_size, o.depth, o.threads, o.attention);
  fmt::print("| batch | step ms (median) | decode tok/s | vs batch 1 |{}\n",
             o.solo ? " solo calls: step ms | batched/solo |" : "");
  fmt::print("| ---: | ---: | ---: | ---: |{}\n", o.solo ? " ---: | ---: |" : "");
  double one = 0;
  for (const int64_t B : o.batches) {
    const int64_t capacity = o.depth + int64_t(o.steps) * (o.runs + 1) + 1;
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<std::vector<float>> logits(static_cast<size_t>(B),
                                           std::vector<float>(static_cast<size_t>(vocab)));
    std::vector<int32_t> token(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      caches.push_back(std::make_unique<KvCache>(c, capacity));
      std::vector<int32_t> prompt(size_t(o.depth));
      for (int64_t i = 0; i < o.depth; ++i) prompt[size_t(i)] = int32_t((i * 31 + b * 7) % vocab);
      std::vector<float> last(static_cast<size_t>(vocab));
      if (o.depth > 0) model->forward(prompt, *caches[size_t(b)], last, options, pool);
      token[size_t(b)] = int32_t((b * 13 + 5) % vocab);
    }
    const auto batched_steps = [&] {
      for (int s = 0; s < o.steps; ++s) {
        std::vector<SequenceChunk> chunks;
        for (int64_t b = 0; b < B; ++b) {
          chunks.push_back(
              {std::span(&token[size_t(b)], 1), caches[size_t(b)].get(), logits[size_t(b)]});
        }
        model->forward_batch(chunks, options, pool);
      }
    };
    const auto solo_steps = [&] {
      for (int s = 0; s < o.steps; ++s) {
        for (int64_t b = 0; b < B; ++b) {
          model->forward(std::span(&token[size_t(b)], 1), *caches[size_t(b)], logits[size_t(b)],
                         options, pool);
        }
      }
    };
    // Batched and solo runs alternate, so that a noisy machine hits both alike.
    std::vector<double> batched, solo;
    for (int r = 0; r < o.runs + 1; ++r) {
      const double t0 = now_seconds();
      batched_steps();
      const double t1 = now_seconds();
      if (r > 0) batched.push_back((t1 - t0) / o.steps);
      for (auto& cache : caches) cache->truncate(o.depth);
      if (o.solo) {
        const double t2 = now_seconds();
        solo_steps();
        if (r > 0) solo.push_back((now_seconds() - t2) / o.steps);
        for (auto& cache : caches) cache->truncate(o.depth);
      }
    }
    const double step = percentile(batched, 0.5);
    const double tps = double(B) / step;
    if (B == o.batches.front()) one = tps / double(B);
    fmt::print("| {} | {:.2f} | {:.0f} | {:.2f}x |", B, step * 1e3, tps, tps / (one * 1.0));
    if (o.solo) {
      const double solo_step = percentile(solo, 0.5);
      fmt::print(" {:.2f} | {:.2f}x |", solo_step * 1e3, solo_step / step);
    }
    fmt::print("\n");
  }
  return 0;
}

}  // namespace
}  // namespace dsa

int main(int argc, char** argv) {
  dsa::Options o;
  CLI::App app{"Batched decode throughput (Model::forward_batch)"};
  app.add_option("-m,--model", o.model_dir, "Model folder")->required();
  app.add_option("-t,--threads", o.threads, "Threads");
  app.add_option("--depth", o.depth, "Cached tokens per sequence before decoding");
  app.add_option("--batches", o.batches, "Batch sizes")->delimiter(',');
  app.add_option("--steps", o.steps, "Decode steps per timed run");
  app.add_option("--runs", o.runs, "Timed runs (median), after one warm-up");
  app.add_option("--attention", o.attention, "auto, sparse or dense");
  app.add_flag("--solo", o.solo, "Also time B separate forward() calls per step");
  CLI11_PARSE(app, argc, argv);
  try {
    return dsa::run(o);
  } catch (const dsa::Error& e) {
    fmt::print(stderr, "batch_decode_bench: error: {}\n", e.what());
    return 1;
  }
}

// What `dsa run` and `dsa chat` share: the model, context, thread, attention and sampling flags
// (named as llama.cpp names them), and loading the model with its tokenizer.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/progress.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "text/tokenizer.h"

namespace dsa::cli {

struct GenerationOptions {
  std::string model_dir;
  int64_t max_tokens = 128;  // -n; chat sets its own default
  int64_t context = 0;       // -c; 0: min(4096, max_position_embeddings)
  int64_t batch = 512;       // -b: prefill chunk
  int threads = 0;
  std::string attention = "auto";
  SamplerParams sampling;
  std::optional<uint64_t> seed;  // none: a random seed, printed so the run can be repeated
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

// Adds -m, -n (with `n_help`), -c, -b, -t, --attention, the sampling flags, --seed, --stop and
// --ignore-eos to `cmd`.
void add_generation_options(CLI::App* cmd, GenerationOptions& o, const std::string& n_help);

// The model, its tokenizer and the threads, ready to generate.
struct LoadedModel {
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Model> model;
  text::Tokenizer tokenizer;
  int64_t context = 0;  // the context size to allocate
};

// Checks the flags, then loads DIR/tokenizer.json and the model (on a terminal with a progress
// bar over reading the checkpoint). Throws dsa::Error for bad flags and files.
LoadedModel load_model(const GenerationOptions& o);

// The sampler parameters with the seed filled in; a random seed is announced on stderr (unless
// sampling is greedy).
SamplerParams sampler_params(const GenerationOptions& o);
// The generation parameters of the flags.
GenerationParams generation_params(const GenerationOptions& o);

// A prefill progress callback drawing a bar on a terminal when the prompt takes more than one
// chunk. `bar` holds the bar between calls.
std::function<void(int64_t, int64_t)> prefill_progress(std::unique_ptr<ProgressBar>& bar,
                                                       int64_t chunk);

}  // namespace dsa::cli

#include "eval/retrieval.h"

#include <algorithm>

#include "core/error.h"
#include "train/data_random.h"

namespace dsa::eval {

int64_t RetrievalResult::correct() const {
  int64_t n = 0;
  for (const RetrievalCell& c : cells) n += c.correct;
  return n;
}

int64_t RetrievalResult::trials() const {
  int64_t n = 0;
  for (const RetrievalCell& c : cells) n += c.trials;
  return n;
}

double RetrievalResult::accuracy() const {
  const int64_t n = trials();
  return n ? double(correct()) / double(n) : 0.0;
}

namespace {

int32_t argmax(std::span<const float> logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace

bool answers_correctly(const Model& model, std::span<const int32_t> prompt,
                       std::span<const int32_t> answer, AttentionMode mode, int64_t chunk,
                       ThreadPool& pool) {
  if (prompt.empty()) fail("retrieval: the prompt is empty");
  const int64_t vocab = model.config().vocab_size;
  KvCache cache(model.config(), int64_t(prompt.size() + answer.size()));
  ForwardOptions options;
  options.attention = mode;
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (size_t pos = 0; pos < prompt.size(); pos += size_t(chunk)) {
    const size_t n = std::min(prompt.size() - pos, size_t(chunk));
    model.forward(prompt.subspan(pos, n), cache, logits, options, pool);
  }
  for (size_t i = 0; i < answer.size(); ++i) {
    if (argmax(logits) != answer[i]) return false;
    if (i + 1 < answer.size()) model.forward(answer.subspan(i, 1), cache, logits, options, pool);
  }
  return true;
}

RetrievalResult run_retrieval(const Model& model, const text::Tokenizer& tokenizer,
                              const train::SyntheticTaskGenerator& generator,
                              const RetrievalGrid& grid, AttentionMode mode, ThreadPool& pool,
                              const RetrievalProgress& progress) {
  const ModelConfig& config = model.config();
  const std::string_view task = train::synthetic_kind_name(grid.kind);
  if (grid.lengths.empty() || grid.depths.empty()) fail("{}: no lengths or no depths", task);
  if (grid.trials < 1) fail("{}: need at least 1 trial per cell, got {}", task, grid.trials);
  if (grid.chunk < 1) fail("{}: the prefill chunk must be at least 1, got {}", task, grid.chunk);
  for (const int64_t length : grid.lengths) {
    if (length < 2 || length > config.max_position_embeddings) {
      fail("{}: length {} is outside [2, {}] (max_position_embeddings)", task, length,
           config.max_position_embeddings);
    }
  }
  for (const double depth : grid.depths) {
    if (!(depth >= 0 && depth <= 1)) fail("{}: depth {} is outside [0, 1]", task, depth);
  }
  if (tokenizer.vocab_size() > config.vocab_size) {
    fail("{}: the tokenizer's {} tokens exceed the model's vocabulary ({})", task,
         tokenizer.vocab_size(), config.vocab_size);
  }
  const std::optional<int32_t> bos = tokenizer.bos_id();
  if (!bos) fail("{}: the tokenizer has no BOS token", task);

  RetrievalResult result;
  result.kind = grid.kind;
  result.mode = mode;
  const int64_t total = int64_t(grid.lengths.size() * grid.depths.size()) * grid.trials;
  int64_t done = 0;
  for (size_t i = 0; i < grid.lengths.size(); ++i) {
    for (size_t j = 0; j < grid.depths.size(); ++j) {
      RetrievalCell cell{
          .length = grid.lengths[i], .depth = grid.depths[j], .correct = 0, .trials = 0};
      for (int64_t trial = 0; trial < grid.trials; ++trial) {
        // One seed per (kind, length, depth, trial), whatever the rest of the grid is.
        uint64_t seed = train::hash_pair(grid.seed, uint64_t(grid.kind));
        seed = train::hash_pair(seed, uint64_t(cell.length));
        seed = train::hash_pair(seed, uint64_t(cell.depth * 1e6));
        seed = train::hash_pair(seed, uint64_t(trial));
        train::SyntheticSample sample;
        try {
          sample = generator.generate(grid.kind, cell.length - 1, cell.depth, seed);  // - 1: BOS
        } catch (const Error& error) {
          fail("{} at length {}: {}", task, cell.length, error.what());
        }
        std::vector<int32_t> prompt = {*bos};
        const std::vector<int32_t> body = tokenizer.encode(sample.prompt, /*allow_special=*/false);
        prompt.insert(prompt.end(), body.begin(), body.end());
        const std::vector<int32_t> answer = tokenizer.encode(sample.answer, false);
        if (int64_t(prompt.size() + answer.size()) > config.max_position_embeddings) {
          fail("{}: a sample of {} tokens is beyond max_position_embeddings ({})", task,
               prompt.size() + answer.size(), config.max_position_embeddings);
        }
        cell.correct += answers_correctly(model, prompt, answer, mode, grid.chunk, pool) ? 1 : 0;
        ++cell.trials;
        if (progress) progress(++done, total);
      }
      result.cells.push_back(cell);
    }
  }
  return result;
}

}  // namespace dsa::eval

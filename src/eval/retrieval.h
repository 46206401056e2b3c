// Long-range retrieval accuracy of a model over a grid of context length x depth (dsa eval):
// passkey retrieval in llama.cpp's convention, multi-key associative recall and needles, made by
// train/synthetic_tasks.h with seeds the training data never uses.
//
// A sample is [BOS] + encode(prompt) + encode(answer) (no special tokens, as `dsa data build`
// encodes documents; the answer starts with a space, so the pieces encode as the whole text
// does), `length` tokens at most with the BOS. It is answered correctly when greedy decoding
// after the prompt reproduces every token of the answer (" 4821." — the number and the period that
// ends it): the prompt runs as prefill chunks, then each answer token is checked against the
// argmax of the logits before it (the lowest id on a tie) and fed as a decode step, stopping at
// the first miss.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "text/tokenizer.h"
#include "train/synthetic_tasks.h"

namespace dsa::eval {

struct RetrievalGrid {
  train::SyntheticKind kind = train::SyntheticKind::kPasskey;
  std::vector<int64_t> lengths;  // tokens per sample, BOS included (each >= 2)
  std::vector<double> depths;    // each in [0, 1]
  int64_t trials = 4;            // samples per cell, each with its own seed
  uint64_t seed = 0;             // the samples are a pure function of (seed, kind, cell, trial)
  int64_t chunk = 512;           // tokens per prefill call
};

struct RetrievalCell {
  int64_t length = 0;
  double depth = 0;
  int64_t correct = 0;
  int64_t trials = 0;
  double accuracy() const { return trials ? double(correct) / double(trials) : 0.0; }
};

struct RetrievalResult {
  train::SyntheticKind kind = train::SyntheticKind::kPasskey;
  AttentionMode mode = AttentionMode::kSparse;
  std::vector<RetrievalCell> cells;  // lengths-major: cells[i * depths + j]
  int64_t correct() const;
  int64_t trials() const;
  double accuracy() const;  // over every cell
};

// True when greedy decoding after `prompt` (which must not be empty) gives `answer`.
bool answers_correctly(const Model& model, std::span<const int32_t> prompt,
                       std::span<const int32_t> answer, AttentionMode mode, int64_t chunk,
                       ThreadPool& pool);

// `done` of `total` samples have been scored.
using RetrievalProgress = std::function<void(int64_t done, int64_t total)>;

// Throws dsa::Error for an empty grid, a length beyond the model's max_position_embeddings or too
// short for the task, a depth outside [0, 1], trials < 1 or chunk < 1, or a tokenizer whose ids
// exceed the model's vocabulary.
RetrievalResult run_retrieval(const Model& model, const text::Tokenizer& tokenizer,
                              const train::SyntheticTaskGenerator& generator,
                              const RetrievalGrid& grid, AttentionMode mode, ThreadPool& pool,
                              const RetrievalProgress& progress = {});

}  // namespace dsa::eval

// Picks the next token from the logits, as llama.cpp's default sampler chain does:
//
//   repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw
//
//   repetition penalty  every distinct token among the last `repeat_last_n` accepted tokens has
//                       its logit divided by `repeat_penalty` when positive, multiplied when
//                       negative (llama.cpp's penalties sampler; counts do not matter)
//   top-k               keeps the k largest logits (ties: the smaller id first)
//   top-p               keeps the shortest prefix of the candidates, sorted by probability,
//                       whose probabilities (softmax over the current candidates) sum to >= p
//   min-p               keeps the candidates whose probability is >= min_p times the largest
//   temperature         divides the logits by T; the draw is from their softmax
//
// top-k, top-p and min-p see the logits at temperature 1 (as in llama.cpp), so the temperature
// only reshapes the distribution among the candidates they keep. Temperature 0 is greedy: the
// argmax of the penalized logits (the smallest id on ties), with no draw.
//
// Draws use std::mt19937_64 seeded with `seed` and this file's own mapping to [0, 1), so a seed
// gives the same tokens with any standard library.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <vector>

namespace dsa {

struct SamplerParams {
  float temperature = 0.8f;     // 0: greedy
  int32_t top_k = 40;           // 0: off
  float top_p = 0.95f;          // 1: off
  float min_p = 0.05f;          // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // tokens the penalty looks back on; 0: off, -1: all accepted
  uint64_t seed = 0;

  // Throws dsa::Error naming the field out of range.
  void validate() const;
};

// A token and its probability in the distribution a draw is made from.
struct TokenProbability {
  int32_t id = 0;
  double probability = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);  // validates

  // The distribution the next draw is made from: the candidates that survive the filters, in
  // descending probability when top-k or top-p sorted them (else by id), probabilities summing
  // to 1. Greedy: the argmax alone. `logits` holds one value per token id.
  std::vector<TokenProbability> distribution(std::span<const float> logits) const;
  // A token drawn from distribution(logits); advances the random state unless a single
  // candidate is left (greedy always).
  int32_t sample(std::span<const float> logits);
  // Records a token of the sequence (prompt or generated) for the repetition penalty.
  void accept(int32_t token);
  // Forgets the recorded tokens (the random state goes on).
  void reset_history();

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  // The penalized logits of every token, as candidates in id order.
  std::vector<Candidate> penalized(std::span<const float> logits) const;

  SamplerParams params_;
  std::deque<int32_t> history_;  // the last repeat_last_n accepted tokens (all of them for -1)
  std::mt19937_64 rng_;
};

}  // namespace dsa

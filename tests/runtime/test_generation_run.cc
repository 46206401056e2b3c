// GenerationRun, the state machine under Generator and the server's batching engine: several
// runs stepped together through Model::forward_batch (prompts prefilled in chunks while others
// decode, runs of different lengths ending at different steps) give each the tokens, text and
// stop reason a Generator gives it alone; stop() ends a run where it is; bad input is refused
// with the sequence unchanged.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "runtime/generation_run.h"
#include "runtime/generator.h"
#include "support/model_fixture.h"
#include "support/test_util.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace dsa {
namespace {

class GenerationRunTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_random_model(dir_->path() / "model", test::preset_config("tiny"), 13);
    pool_ = new ThreadPool(2);
    model_ = Model::load(dir_->path() / "model", *pool_).release();
    text::BpeTrainer trainer({.vocab_size = 400, .min_frequency = 2});
    for (int i = 0; i < 20; ++i) {
      trainer.add_text("the indexer scores every key, and the model attends to the best ones. ");
    }
    tokenizer_ = new text::Tokenizer(
        text::Tokenizer::from_json_text(trainer.train_to_json(), "trained tokenizer"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete pool_;
    delete dir_;
  }

  static SamplerParams sampling(uint64_t seed) {
    SamplerParams p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
  }

  static inline test::TempDir* dir_ = nullptr;
  static inline ThreadPool* pool_ = nullptr;
  static inline Model* model_ = nullptr;
  static inline text::Tokenizer* tokenizer_ = nullptr;
};

struct Request {
  std::string prompt;
  GenerationParams params;
  uint64_t seed;
};

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  GenerationStats stats;
};

std::vector<Request> requests() {
  std::vector<Request> out(4);
  out[0] = {"the indexer scores", {}, 1};
  out[0].params.max_tokens = 12;
  out[1] = {"every key, and the model attends to the best ones. the indexer", {}, 2};
  out[1].params.max_tokens = 30;
  out[1].params.prefill_chunk = 3;  // prefilled over several steps while the others decode
  out[2] = {"ones", {}, 3};
  out[2].params.max_tokens = 25;
  out[2].params.stop_strings = {"e"};  // ends early, at a step of its own
  out[3] = {"the model", {}, 4};
  out[3].params.max_tokens = 0;  // ends right after its prompt
  for (Request& r : out) r.params.ignore_eos = true;
  return out;
}

TEST_F(GenerationRunTest, RunsSteppedTogetherGetWhatTheyGetAlone) {
  const std::vector<Request> reqs = requests();
  std::vector<Result> alone(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    Generator generator(*model_, *tokenizer_, 128, *pool_);
    Sampler sampler(sampling(reqs[i].seed));
    GenerationCallbacks callbacks;
    callbacks.on_text = [&](std::string_view t) { alone[i].text += t; };
    alone[i].stats =
        generator.generate(tokenizer_->encode(reqs[i].prompt), sampler, reqs[i].params, callbacks);
    alone[i].tokens.assign(generator.tokens().begin(), generator.tokens().end());
  }

  const int64_t vocab = model_->config().vocab_size;
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<std::vector<int32_t>> tokens(reqs.size());
  std::vector<std::vector<float>> logits(reqs.size(), std::vector<float>(size_t(vocab)));
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<GenerationCallbacks> callbacks(reqs.size());
  std::vector<Result> together(reqs.size());
  std::vector<std::unique_ptr<GenerationRun>> runs;
  for (size_t i = 0; i < reqs.size(); ++i) {
    caches.push_back(std::make_unique<KvCache>(model_->config(), 128));
    samplers.push_back(std::make_unique<Sampler>(sampling(reqs[i].seed)));
    callbacks[i].on_text = [&, i](std::string_view t) { together[i].text += t; };
    runs.push_back(std::make_unique<GenerationRun>(*model_, *tokenizer_, *caches[i], tokens[i],
                                                   tokenizer_->encode(reqs[i].prompt), *samplers[i],
                                                   reqs[i].params, callbacks[i]));
  }
  int steps = 0;
  while (true) {
    std::vector<size_t> batch;
    std::vector<SequenceChunk> chunks;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (runs[i]->done()) continue;
      batch.push_back(i);
      chunks.push_back(
          {runs[i]->next_tokens(reqs[i].params.prefill_chunk), caches[i].get(), logits[i]});
    }
    if (batch.empty()) break;
    model_->forward_batch(chunks, {}, *pool_);
    for (size_t j = 0; j < batch.size(); ++j) {
      runs[batch[j]]->advance(int64_t(chunks[j].tokens.size()), logits[batch[j]]);
    }
    ASSERT_LT(++steps, 200);
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(tokens[i], alone[i].tokens) << i;
    EXPECT_EQ(together[i].text, alone[i].text) << i;
    EXPECT_EQ(runs[i]->stats().stop, alone[i].stats.stop) << i;
    EXPECT_EQ(runs[i]->stats().generated_tokens, alone[i].stats.generated_tokens) << i;
    EXPECT_EQ(runs[i]->stats().prompt_tokens, alone[i].stats.prompt_tokens) << i;
  }
  EXPECT_EQ(runs[2]->stats().stop, StopReason::kStopString);
  EXPECT_EQ(runs[3]->stats().generated_tokens, 0);
  EXPECT_EQ(runs[1]->stats().generated_tokens, 30);
}

TEST_F(GenerationRunTest, StopEndsTheRunWhereItIs) {
  KvCache cache(model_->config(), 64);
  std::vector<int32_t> tokens;
  Sampler sampler(sampling(1));
  GenerationParams params;
  params.max_tokens = 50;
  int texts = 0;
  GenerationCallbacks callbacks;
  callbacks.on_text = [&](std::string_view) { ++texts; };
  GenerationRun run(*model_, *tokenizer_, cache, tokens, tokenizer_->encode("the model"), sampler,
                    params, callbacks);
  std::vector<float> logits(size_t(model_->config().vocab_size));
  for (int i = 0; i < 4; ++i) {
    const auto next = run.next_tokens(64);
    model_->forward(next, cache, logits, {}, *pool_);
    run.advance(int64_t(next.size()), logits);
  }
  const int before = texts;
  run.stop();
  EXPECT_TRUE(run.done());
  EXPECT_TRUE(run.next_tokens(1).empty());
  EXPECT_EQ(texts, before);
  EXPECT_EQ(run.stats().generated_tokens, 4);
  EXPECT_EQ(run.stats().context_tokens, int64_t(tokens.size()));
}

TEST_F(GenerationRunTest, BadInputLeavesTheSequenceUnchanged) {
  KvCache cache(model_->config(), 8);
  std::vector<int32_t> tokens;
  Sampler sampler(sampling(1));
  const GenerationParams params;
  const GenerationCallbacks callbacks;
  const auto error_of = [&](std::vector<int32_t> prompt) -> std::string {
    try {
      GenerationRun run(*model_, *tokenizer_, cache, tokens, prompt, sampler, params, callbacks);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(error_of(std::vector<int32_t>(9, 1)).find("only 8 of the context's 8"),
            std::string::npos);
  EXPECT_NE(error_of({1, int32_t(model_->config().vocab_size)}).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of({}).find("the prompt is empty"), std::string::npos);
  EXPECT_TRUE(tokens.empty());
  EXPECT_EQ(cache.size(), 0);
}

}  // namespace
}  // namespace dsa

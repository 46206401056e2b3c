// The generation loop on the tiny random-weight model with a tokenizer trained here: the token
// limit, a full context, EOS, stop strings that span tokens, streaming text and the statistics.
// Random weights make gibberish, so the tests check mechanics; a seeded sampler makes the tokens
// the same in every run, so a run with a stop or an EOS can be compared with one without.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "runtime/generator.h"
#include "support/model_fixture.h"
#include "support/test_util.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace dsa {
namespace {

constexpr uint64_t kModelSeed = 11;

text::Tokenizer train_tokenizer() {
  text::BpeTrainer trainer({.vocab_size = 400, .min_frequency = 2});
  for (int i = 0; i < 20; ++i) {
    trainer.add_text(
        "The quick brown fox jumps over the lazy dog. A sparse attention model reads the tokens "
        "it needs and skips the rest; the indexer scores every key and keeps the top ones. ");
  }
  return text::Tokenizer::from_json_text(trainer.train_to_json(), "trained tokenizer");
}

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_random_model(dir_->path() / "model", test::preset_config("tiny"), kModelSeed);
    pool_ = new ThreadPool(2);
    model_ = Model::load(dir_->path() / "model", *pool_).release();
    tokenizer_ = new text::Tokenizer(train_tokenizer());
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete pool_;
    delete dir_;
  }

  static SamplerParams sampling(uint64_t seed = 5) {
    SamplerParams p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
  }

  std::vector<int32_t> prompt() const { return tokenizer_->encode("The quick brown fox"); }

  struct Run {
    GenerationStats stats;
    std::string text;                 // what on_text streamed
    std::vector<std::string> pieces;  // each on_text call
    std::vector<int32_t> generated;   // tokens() after the prompt
  };

  // Generates from prompt() in a fresh generator.
  static Run run(const Model& model, const GenerationParams& params, int64_t context = 256,
                 uint64_t seed = 5) {
    Generator generator(model, *tokenizer_, context, *pool_);
    Sampler sampler(sampling(seed));
    Run r;
    GenerationCallbacks callbacks;
    callbacks.on_text = [&](std::string_view t) {
      r.text += t;
      r.pieces.emplace_back(t);
    };
    const std::vector<int32_t> p = tokenizer_->encode("The quick brown fox");
    r.stats = generator.generate(p, sampler, params, callbacks);
    r.generated.assign(generator.tokens().begin() + std::ptrdiff_t(p.size()),
                       generator.tokens().end());
    return r;
  }

  static test::TempDir* dir_;
  static ThreadPool* pool_;
  static Model* model_;
  static text::Tokenizer* tokenizer_;
};
test::TempDir* GeneratorTest::dir_ = nullptr;
ThreadPool* GeneratorTest::pool_ = nullptr;
Model* GeneratorTest::model_ = nullptr;
text::Tokenizer* GeneratorTest::tokenizer_ = nullptr;

TEST_F(GeneratorTest, StopsAfterNTokensAndCountsEverything) {
  GenerationParams params;
  params.max_tokens = 12;
  params.ignore_eos = true;
  params.prefill_chunk = 2;
  Generator generator(*model_, *tokenizer_, 256, *pool_);
  Sampler sampler(sampling());
  std::string text;
  std::vector<std::pair<int64_t, int64_t>> progress;
  GenerationCallbacks callbacks;
  callbacks.on_text = [&](std::string_view t) {
    EXPECT_FALSE(t.empty());
    text += t;
  };
  callbacks.on_prefill = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
  const std::vector<int32_t> p = prompt();
  const GenerationStats s = generator.generate(p, sampler, params, callbacks);

  EXPECT_EQ(s.stop, StopReason::kMaxTokens);
  EXPECT_EQ(s.generated_tokens, 12);
  EXPECT_EQ(s.prompt_tokens, int64_t(p.size()));
  EXPECT_EQ(s.context_tokens, int64_t(p.size()) + 12);
  EXPECT_EQ(s.context_size, 256);
  EXPECT_EQ(s.cache_bytes, generator.cache().bytes());
  EXPECT_GT(s.prompt_seconds, 0.0);
  EXPECT_GT(s.generation_seconds, 0.0);
  EXPECT_NEAR(s.generation_tokens_per_second(), 12 / s.generation_seconds, 1e-9);
  // Every generated token is already in the cache.
  EXPECT_EQ(generator.cache().size(), int64_t(p.size()) + 12);
  ASSERT_EQ(generator.tokens().size(), p.size() + 12);
  const std::vector<int32_t> generated(generator.tokens().begin() + std::ptrdiff_t(p.size()),
                                       generator.tokens().end());
  EXPECT_EQ(text, tokenizer_->decode(generated));
  for (int32_t t : generated) EXPECT_LT(t, tokenizer_->vocab_size());
  // Chunks of 2 prompt tokens, reported as they finish.
  ASSERT_EQ(progress.size(), (p.size() + 1) / 2);
  EXPECT_EQ(progress.back(), std::make_pair(int64_t(p.size()), int64_t(p.size())));
  EXPECT_NE(format_stats(s).find("generation: 12 tokens"), std::string::npos) << format_stats(s);

  // The same seed gives the same tokens; a continuation runs only its new tokens.
  const Run again = run(*model_, params);
  EXPECT_EQ(again.generated, generated);
  const std::vector<int32_t> more = tokenizer_->encode(" dog");
  const GenerationStats s2 = generator.generate(more, sampler, params);
  EXPECT_EQ(s2.prompt_tokens, int64_t(more.size()));
  EXPECT_EQ(s2.context_tokens, int64_t(p.size() + 12 + more.size() + 12));
  // An empty prompt continues where the last call stopped.
  params.max_tokens = 3;
  const GenerationStats s3 = generator.generate({}, sampler, params);
  EXPECT_EQ(s3.prompt_tokens, 0);
  EXPECT_EQ(s3.generated_tokens, 3);
}

TEST_F(GeneratorTest, StopsWhenTheContextIsFull) {
  GenerationParams params;
  params.max_tokens = -1;
  params.ignore_eos = true;
  const int64_t context = int64_t(prompt().size()) + 5;
  Generator generator(*model_, *tokenizer_, context, *pool_);
  Sampler sampler(sampling());
  const GenerationStats s = generator.generate(prompt(), sampler, params);
  EXPECT_EQ(s.stop, StopReason::kContextFull);
  EXPECT_EQ(s.generated_tokens, 5);
  EXPECT_EQ(generator.free_tokens(), 0);
  // Nothing more fits: an error, and the sequence is unchanged.
  const std::vector<int32_t> one = {5};
  EXPECT_THROW(generator.generate(one, sampler, params), Error);
  EXPECT_EQ(int64_t(generator.tokens().size()), context);
  // A prompt that fills the context exactly generates nothing.
  generator.reset();
  std::vector<int32_t> full(size_t(context), 5);
  const GenerationStats f = generator.generate(full, sampler, params);
  EXPECT_EQ(f.stop, StopReason::kContextFull);
  EXPECT_EQ(f.generated_tokens, 0);
  // Too long a prompt.
  generator.reset();
  full.push_back(5);
  try {
    generator.generate(full, sampler, params);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string expected =
        fmt::format("only {} of the context's {} tokens are free", context, context);
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  EXPECT_TRUE(generator.tokens().empty());
}

TEST_F(GeneratorTest, StopsAtEosAndRunsItWithTheNextPrompt) {
  GenerationParams params;
  params.max_tokens = 16;
  const Run free = run(*model_, params);
  // A model whose eos_token_id is a token this run generates (the weights depend only on the
  // seed and the tensor names, so it samples the same tokens up to there).
  size_t at = 0;
  for (size_t i = 1; i < free.generated.size() && at == 0; ++i) {
    if (std::find(free.generated.begin(), free.generated.begin() + std::ptrdiff_t(i),
                  free.generated[i]) == free.generated.begin() + std::ptrdiff_t(i)) {
      at = i;
    }
  }
  ASSERT_GT(at, 0u) << "the run repeats one token";
  ModelConfig config = test::preset_config("tiny");
  config.eos_token_id = free.generated[at];
  test::write_random_model(dir_->path() / "eos_model", config, kModelSeed);
  const std::unique_ptr<Model> eos_model = Model::load(dir_->path() / "eos_model", *pool_);

  Generator generator(*eos_model, *tokenizer_, 256, *pool_);
  Sampler sampler(sampling());
  std::string text;
  GenerationCallbacks callbacks;
  callbacks.on_text = [&](std::string_view t) { text += t; };
  const std::vector<int32_t> p = prompt();
  const GenerationStats s = generator.generate(p, sampler, params, callbacks);
  EXPECT_EQ(s.stop, StopReason::kEos);
  EXPECT_EQ(s.generated_tokens, int64_t(at));
  const std::vector<int32_t> before(free.generated.begin(),
                                    free.generated.begin() + std::ptrdiff_t(at));
  EXPECT_EQ(text, tokenizer_->decode(before));  // the EOS is not text
  // The EOS ends the sequence, not yet run; the next call runs it before its prompt.
  ASSERT_EQ(generator.tokens().size(), p.size() + at + 1);
  EXPECT_EQ(generator.tokens().back(), config.eos_token_id);
  EXPECT_EQ(generator.cache().size(), int64_t(p.size() + at));
  params.max_tokens = 2;
  const GenerationStats next = generator.generate(p, sampler, params);
  EXPECT_EQ(next.prompt_tokens, int64_t(p.size()) + 1);
}

TEST_F(GeneratorTest, StopStringsSpanningTokensCutTheText) {
  GenerationParams params;
  params.max_tokens = 24;
  params.ignore_eos = true;
  const Run free = run(*model_, params);
  ASSERT_EQ(free.text, tokenizer_->decode(free.generated));
  // A stop string made of the last character of one token and the first of the next: at a
  // boundary b where the text of the tokens up to it and up to the next one are both prefixes of
  // the text (no character is split there), with ASCII on both sides.
  std::string stop;
  for (size_t i = 0; i + 2 < free.generated.size() && stop.empty(); ++i) {
    const std::string upto = tokenizer_->decode(std::span(free.generated).first(i + 1));
    const std::string next = tokenizer_->decode(std::span(free.generated).first(i + 2));
    const size_t b = upto.size();
    if (b == 0 || next.size() <= b || free.text.compare(0, next.size(), next) != 0 ||
        next.compare(0, b, upto) != 0) {
      continue;
    }
    if (uint8_t(free.text[b - 1]) < 0x80 && uint8_t(free.text[b]) < 0x80) {
      stop = free.text.substr(b - 1, 2);
    }
  }
  ASSERT_FALSE(stop.empty()) << "no ASCII token boundary in: " << free.text;

  params.stop_strings = {"\x01never", stop};
  const Run cut = run(*model_, params);
  EXPECT_EQ(cut.stats.stop, StopReason::kStopString);
  EXPECT_EQ(cut.text, free.text.substr(0, free.text.find(stop))) << "stop: " << stop;
  for (const std::string& piece : cut.pieces) EXPECT_EQ(piece.find(stop), std::string::npos);
  // Generation ended at the token that completed the stop string, which is in the cache.
  EXPECT_LT(cut.stats.generated_tokens, free.stats.generated_tokens);
  EXPECT_EQ(std::vector<int32_t>(free.generated.begin(),
                                 free.generated.begin() + std::ptrdiff_t(cut.generated.size())),
            cut.generated);

  // A stop string that only begins at the very end holds that end back until the text ends,
  // then releases it: nothing is lost.
  params.stop_strings = {free.text.substr(free.text.size() - 1) + "\x02"};
  const Run held = run(*model_, params);
  EXPECT_EQ(held.stats.stop, StopReason::kMaxTokens);
  EXPECT_EQ(held.text, free.text);
}

TEST_F(GeneratorTest, BadParametersAreErrors) {
  Generator generator(*model_, *tokenizer_, 64, *pool_);
  Sampler sampler(sampling());
  GenerationParams params;
  params.stop_strings = {""};
  EXPECT_THROW(generator.generate(prompt(), sampler, params), Error);
  params = {};
  params.max_tokens = -2;
  EXPECT_THROW(generator.generate(prompt(), sampler, params), Error);
  params = {};
  EXPECT_THROW(generator.generate({}, sampler, params), Error);  // nothing to start from
  const std::vector<int32_t> out_of_range = {1, 1024};
  EXPECT_THROW(generator.generate(out_of_range, sampler, params), Error);
  EXPECT_TRUE(generator.tokens().empty());
  EXPECT_THROW(Generator(*model_, *tokenizer_, 4096, *pool_), Error);  // > max_position (2048)
}

}  // namespace
}  // namespace dsa

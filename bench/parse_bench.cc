// Parse time against input size for what the engine reads from untrusted sources: the streaming
// output parser on a whole model output fed at once (what the server does) and in token-sized
// pieces, a safetensors header, a config.json, a tokenizer.json and a chat request. Time per byte
// should stay flat from 64 KB to 4 MB (linear parsing); docs/input-limits.md records the numbers.
//   build/release/bench/parse_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/json_strict.h"
#include "core/safetensors.h"
#include "model/config.h"
#include "model/presets.h"
#include "text/bpe_trainer.h"
#include "text/chat_messages.h"
#include "text/output_parser.h"
#include "text/tokenizer.h"

namespace {

using dsa::text::OutputParser;
using dsa::text::ThinkingMode;

std::string param(const std::string& name, const std::string& is_string, const std::string& value) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + is_string + "\">" + value +
         "</｜DSML｜parameter>\n";
}

// About `bytes` of completion: reasoning, then one block of tool calls with repeated names, then
// one call with many parameters (the duplicate-name check's worst case), then EOS.
std::string completion(size_t bytes) {
  std::string text;
  while (text.size() < bytes / 4) text += "Reasoning about <the> task, step by step.\n";
  text += "</think>Calling tools.\n\n<｜DSML｜function_calls>\n";
  for (size_t i = 0; text.size() < bytes * 3 / 4; ++i) {
    text += "<｜DSML｜invoke name=\"tool_" + std::to_string(i % 5) + "\">\n" +
            param("city", "true", "Paris " + std::to_string(i)) +
            param("n", "false", std::to_string(i)) + "</｜DSML｜invoke>\n";
  }
  text += "<｜DSML｜invoke name=\"wide\">\n";
  for (size_t p = 0; text.size() < bytes; ++p) text += param("p" + std::to_string(p), "false", "1");
  return text + "</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>";
}

void BM_OutputParserWhole(benchmark::State& state) {
  const std::string text = completion(size_t(state.range(0)));
  for (auto _ : state) {
    OutputParser parser(ThinkingMode::kThinking);
    benchmark::DoNotOptimize(parser.feed(text));
    benchmark::DoNotOptimize(parser.finish());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}

// 4-byte pieces, about what one token's text is.
void BM_OutputParserPieces(benchmark::State& state) {
  const std::string text = completion(size_t(state.range(0)));
  const std::string_view view(text);
  for (auto _ : state) {
    OutputParser parser(ThinkingMode::kThinking);
    for (size_t at = 0; at < view.size(); at += 4)
      benchmark::DoNotOptimize(parser.feed(view.substr(at, 4)));
    benchmark::DoNotOptimize(parser.finish());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}

// A whole safetensors file of one-element F32 tensors whose header is about `bytes` long.
std::vector<uint8_t> safetensors_file(size_t bytes) {
  std::string header = "{\"__metadata__\": {\"format\": \"pt\"}";
  size_t count = 0;
  while (header.size() < bytes) {
    header += ", \"model.layers." + std::to_string(count / 100) + ".mlp.experts." +
              std::to_string(count % 100) + ".weight\": {\"dtype\": \"F32\", \"shape\": [1], " +
              "\"data_offsets\": [" + std::to_string(4 * count) + ", " +
              std::to_string(4 * count + 4) + "]}";
    ++count;
  }
  header += "}";
  std::vector<uint8_t> file(8 + header.size() + 4 * count, 0);
  const uint64_t length = header.size();
  std::memcpy(file.data(), &length, 8);  // little-endian hosts only, as the engine
  std::memcpy(file.data() + 8, header.data(), header.size());
  return file;
}

void BM_SafetensorsHeader(benchmark::State& state) {
  const std::vector<uint8_t> file = safetensors_file(size_t(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(dsa::parse_safetensors_header(file, "bench.safetensors"));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(file.size()));
}

// The tiny preset's config.json plus an unknown key holding a list of numbers, about `bytes` in
// all: what an unexpected or hostile extra costs the config reader (it is kept, not interpreted).
std::string config_json(size_t bytes) {
  nlohmann::json config = dsa::model_config_to_json(dsa::find_model_preset("tiny").config);
  nlohmann::json extra = nlohmann::json::array();
  for (size_t size = config.dump().size(); size < bytes; size += 8) extra.push_back(1234567);
  config["unknown_extra"] = std::move(extra);
  return config.dump();
}

void BM_ConfigJson(benchmark::State& state) {
  const std::string text = config_json(size_t(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        dsa::parse_model_config(dsa::parse_json_strict(text, "config.json"), "config.json"));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}

// A byte-level BPE tokenizer trained on a few words, its vocabulary then grown with extra
// (unmerged) entries to about `bytes`: the bulk of a real tokenizer.json is its vocabulary.
std::string tokenizer_json(size_t bytes) {
  dsa::text::BpeTrainer trainer({.vocab_size = 400, .min_frequency = 1});
  trainer.add_text("the quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs.");
  nlohmann::json json = nlohmann::json::parse(trainer.train_to_json());
  nlohmann::json& vocab = json["model"]["vocab"];
  int64_t next_id = 0;
  for (const auto& item : vocab.items())
    next_id = std::max<int64_t>(next_id, item.value().get<int64_t>() + 1);
  for (const auto& token : json["added_tokens"]) {
    next_id = std::max<int64_t>(next_id, token["id"].get<int64_t>() + 1);
  }
  for (size_t size = json.dump().size(); size < bytes; size += 24) {
    vocab["\u0120extra_token_" + std::to_string(next_id)] = next_id;
    ++next_id;
  }
  return json.dump();
}

void BM_TokenizerJson(benchmark::State& state) {
  const std::string text = tokenizer_json(size_t(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(dsa::text::Tokenizer::from_json_text(text, "tokenizer.json"));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}

// An OpenAI chat request of short user / assistant turns, about `bytes` long.
std::string chat_request(size_t bytes) {
  std::string text = R"({"messages": [{"role": "system", "content": "You are terse."})";
  for (size_t i = 0; text.size() < bytes; ++i) {
    text += i % 2 ? R"(, {"role": "assistant", "content": "Answer )"
                  : R"(, {"role": "user", "content": "Question )";
    text += std::to_string(i) + R"(, with some words in it."})";
  }
  return text + "]}";
}

void BM_ChatRequest(benchmark::State& state) {
  const std::string text = chat_request(size_t(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(dsa::text::parse_chat_request(text, "request"));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}

}  // namespace

BENCHMARK(BM_OutputParserWhole)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 4 << 20)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_OutputParserPieces)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 4 << 20)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SafetensorsHeader)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 4 << 20)
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_ConfigJson)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 4 << 20)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TokenizerJson)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 4 << 20)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ChatRequest)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 4 << 20)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();

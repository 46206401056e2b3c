// `dsa data build`: tokenized training data from text files (src/train/data_build.h,
// docs/data.md).
//
//   dsa data build -i DIR_OR_FILES... --tokenizer tokenizer.json -o OUT [--heldout-fraction 0.01]
//                  [--synthetic-ratio 0.2] [--synthetic-lengths 512,1024,2048] [--seed S]
//                  [-t THREADS]
#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "flag_values.h"
#include "train/data_build.h"

namespace dsa::cli {
namespace {

struct DataBuildArgs {
  std::vector<std::string> inputs;
  std::string tokenizer;
  std::string output;
  std::string heldout_fraction = "0.01";
  std::string synthetic_ratio = "0.2";
  std::string synthetic_lengths = "512,1024,2048";
  std::string seed = "0";
  std::string threads;
};

double parse_fraction_flag(const std::string& text, std::string_view flag) {
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(value)) {
    fail("{}: '{}' is not a number", flag, text);
  }
  if (value < 0 || value >= 1) fail("{}: {} must be in [0, 1)", flag, text);
  return value;
}

std::string shell_quote(const std::string& text) {
  if (!text.empty() && text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789_-./,=:+@%") == std::string::npos) {
    return text;
  }
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * double(part) / double(whole)) : "0%";
}

void run_build(const DataBuildArgs& a) {
  train::DataBuildOptions o;
  for (const std::string& input : a.inputs) o.inputs.emplace_back(input);
  o.tokenizer = a.tokenizer;
  o.output = a.output;
  o.heldout_fraction = parse_fraction_flag(a.heldout_fraction, "--heldout-fraction");
  o.synthetic_ratio = parse_fraction_flag(a.synthetic_ratio, "--synthetic-ratio");
  o.synthetic_lengths.clear();
  for (const std::string& item : split_commas(a.synthetic_lengths)) {
    o.synthetic_lengths.push_back(parse_int_flag(item, "--synthetic-lengths", 2));
  }
  const int64_t seed = parse_int_flag(a.seed, "--seed", 0);
  o.seed = uint64_t(seed);
  o.threads =
      a.threads.empty() ? 0 : int(std::min<int64_t>(parse_int_flag(a.threads, "-t", 1), 4096));

  // The command as it would reproduce this build, defaults spelled out.
  std::string command = "dsa data build -i";
  for (const std::string& input : a.inputs) command += " " + shell_quote(input);
  command += fmt::format(
      " --tokenizer {} -o {} --heldout-fraction {} --synthetic-ratio {} --synthetic-lengths {} "
      "--seed {}",
      shell_quote(a.tokenizer), shell_quote(a.output), a.heldout_fraction, a.synthetic_ratio,
      a.synthetic_lengths, seed);
  o.command = command;

  const train::DataBuildReport r = train::build_dataset(o);
  for (const auto& path : r.skipped) {
    fmt::print(stderr, "dsa: warning: {}: empty, skipped\n", path.string());
  }
  const train::KindCount train_total = r.total(train::Split::kTrain);
  const train::KindCount heldout_total = r.total(train::Split::kHeldout);
  fmt::print(
      "read {} file(s){} -> {}\n", r.files,
      r.skipped.empty() ? std::string() : fmt::format(" ({} empty, skipped)", r.skipped.size()),
      a.output);
  std::string mix;
  for (int k = 0; k < train::kDocumentKindCount; ++k) {
    const train::KindCount& c = r.train[k];
    if (c.documents == 0) continue;
    mix += fmt::format("{}{} {} ({} docs)", mix.empty() ? "" : ", ",
                       train::document_kind_name(train::DocumentKind(k)),
                       percent(c.tokens, train_total.tokens), format_count(uint64_t(c.documents)));
  }
  fmt::print("train:   {} tokens in {} documents: {}\n", format_count(uint64_t(train_total.tokens)),
             format_count(uint64_t(train_total.documents)), mix);
  fmt::print("heldout: {} tokens in {} documents\n", format_count(uint64_t(heldout_total.tokens)),
             format_count(uint64_t(heldout_total.documents)));
  fmt::print("tokenizer sha256 {}\n", r.tokenizer_sha256);
}

}  // namespace

void register_data(CLI::App& app) {
  auto* group = app.add_subcommand("data", "Training data tools");
  group->require_subcommand(1);
  auto args = std::make_shared<DataBuildArgs>();
  auto* build = group->add_subcommand(
      "build", "Tokenize text files into train/held-out shards with synthetic long-range tasks");
  build
      ->add_option("-i,--input", args->inputs,
                   "Text files or folders of .txt files (one document per file)")
      ->required()
      ->expected(1, -1);
  build->add_option("--tokenizer", args->tokenizer, "tokenizer.json to encode with")->required();
  build->add_option("-o,--output", args->output, "Output folder")->required();
  build->add_option("--heldout-fraction", args->heldout_fraction,
                    "Fraction of documents held out (default 0.01)");
  build->add_option("--synthetic-ratio", args->synthetic_ratio,
                    "Fraction of training tokens from synthetic tasks (default 0.2)");
  build->add_option("--synthetic-lengths", args->synthetic_lengths,
                    "Token lengths of synthetic documents, BOS included (default 512,1024,2048)");
  build->add_option("--seed", args->seed,
                    "Seed of the split, the synthetic tasks and the order (default 0)");
  build->add_option("-t,--threads", args->threads, "Encoding threads (default: all)");
  build->callback([args] { run_build(*args); });
}

}  // namespace dsa::cli

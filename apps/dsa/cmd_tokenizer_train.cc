// `dsa tokenizer train -f FILE... --vocab-size N -o tokenizer.json`: learns a byte-level BPE
// vocabulary with DeepSeek-V3's pre-tokenizer and chat tokens (see src/text/bpe_trainer.h).
#include <fmt/format.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace dsa::cli {
namespace {

struct TrainArgs {
  std::vector<std::string> files;
  std::string output;
  int32_t vocab_size = 0;
  int64_t min_frequency = 2;
};

void run_train(const TrainArgs& args) {
  text::BpeTrainer trainer({args.vocab_size, args.min_frequency});
  size_t total_bytes = 0;
  for (const std::string& path : args.files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("tokenizer train: cannot open training file {}", path);
    std::ostringstream content;
    content << in.rdbuf();
    trainer.add_text(content.str());
    total_bytes += content.str().size();
  }
  const std::string json = trainer.train_to_json();
  // Check what we wrote loads before replacing anything on disk.
  const text::Tokenizer tokenizer = text::Tokenizer::from_json_text(json, args.output);
  std::ofstream out(args.output, std::ios::binary);
  if (!out) fail("tokenizer train: cannot write {}", args.output);
  out << json;
  out.close();
  if (!out) fail("tokenizer train: error while writing {}", args.output);
  fmt::print("trained on {} bytes from {} file(s): {} tokens -> {}\n", total_bytes,
             args.files.size(), tokenizer.vocab_size(), args.output);
}

}  // namespace

void register_tokenizer(CLI::App& app) {
  auto* group = app.add_subcommand("tokenizer", "Tokenizer tools");
  group->require_subcommand(1);
  auto args = std::make_shared<TrainArgs>();
  auto* train =
      group->add_subcommand("train", "Train a byte-level BPE tokenizer.json on text files");
  train->add_option("-f,--file", args->files, "Training text file(s)")->required()->expected(1, -1);
  train->add_option("--vocab-size", args->vocab_size, "Total vocabulary size (tokens)")->required();
  train->add_option("--min-frequency", args->min_frequency,
                    "Stop when the most frequent pair occurs fewer times (default 2)");
  train->add_option("-o,--output", args->output, "Where to write tokenizer.json")->required();
  train->callback([args] { run_train(*args); });
}

}  // namespace dsa::cli

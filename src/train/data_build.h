// `dsa data build`: text files -> a token data set (format: train/data_shards.h; docs/data.md).
//
// One .txt file is one document (a folder input contributes every *.txt below it, in path
// order). Documents are encoded without special tokens and each is preceded by the BOS token. A
// document goes to the held-out split when a hash of (seed, its path relative to its input) falls
// below heldout_fraction, so membership is stable across runs and does not move when other files
// are added or removed; at least one document is held out when the fraction is positive and
// there are two or more, and at least one stays in training. Synthetic long-range tasks
// (train/synthetic_tasks.h) are added to the training split until they make up synthetic_ratio
// of its tokens, cycling through the kinds (passkey, kv_recall, needle) and, for each round of
// kinds, through synthetic_lengths; each synthetic document, BOS included, fits in its length, so
// a training window of that length that starts at its BOS sees it whole. The training documents
// are then shuffled (from the seed); held-out documents keep the input order and are never mixed
// with synthetic ones.
//
// Input problems are dsa::Errors naming the file: a missing input, a folder with no .txt file, an
// unreadable file, invalid UTF-8 (with its byte offset: the build refuses broken text rather than
// training on U+FFFD), or no text at all. Files that are empty or only whitespace are skipped and
// listed in data.json. A leading UTF-8 byte-order mark is dropped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "train/data_shards.h"

namespace dsa::train {

struct DataBuildOptions {
  std::vector<std::filesystem::path> inputs;  // .txt files or folders
  std::filesystem::path tokenizer;            // tokenizer.json
  std::filesystem::path output;               // folder; created, its data set replaced
  double heldout_fraction = 0.01;             // of documents, in [0, 1)
  double synthetic_ratio = 0.2;               // of training tokens, in [0, 1)
  std::vector<int64_t> synthetic_lengths = {512, 1024, 2048};  // tokens, BOS included
  uint64_t seed = 0;
  std::string command;  // recorded in data.json
  int threads = 0;  // for encoding (<= 0: all hardware threads); the result does not depend on it
};

struct KindCount {
  int64_t documents = 0;
  int64_t tokens = 0;
};

struct DataBuildReport {
  KindCount train[kDocumentKindCount];         // per DocumentKind
  KindCount heldout[kDocumentKindCount];       // per DocumentKind (text only)
  int64_t files = 0;                           // .txt files read
  std::vector<std::filesystem::path> skipped;  // empty files
  std::string tokenizer_sha256;
  KindCount total(Split split) const;
};

// Builds the data set into options.output. data.json is removed first and written last, so a
// build that fails midway leaves no data set that TokenDataset::open would accept.
DataBuildReport build_dataset(const DataBuildOptions& options);

// The byte offset of the first invalid UTF-8 sequence in `text`, or npos.
size_t first_invalid_utf8(std::string_view text);

}  // namespace dsa::train

// Reading a token data set written by `dsa data build` (format: train/data_shards.h). The split
// files are memory-mapped; the spans stay valid while the TokenDataset (or a move of it) lives.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "core/safetensors.h"
#include "train/data_shards.h"

namespace dsa::train {

class TokenDataset {
 public:
  // Reads DIR/data.json and maps both split files. Every inconsistency is a dsa::Error naming the
  // file: a missing file or key, another format version, a tensor of the wrong dtype or shape,
  // counts that differ from data.json, document starts that are not increasing from 0 or not at a
  // BOS token, a token outside [0, vocab_size).
  static TokenDataset open(const std::filesystem::path& dir);

  const std::filesystem::path& directory() const { return directory_; }
  int64_t vocab_size() const { return vocab_size_; }  // of the tokenizer, from data.json
  std::string tokenizer_sha256() const { return tokenizer_sha256_; }
  int32_t bos_id() const { return bos_id_; }
  int64_t tokens(Split split) const { return int64_t(part(split).tokens.size()); }
  int64_t documents(Split split) const { return int64_t(part(split).document_starts.size()); }
  std::span<const int32_t> all(Split split) const { return part(split).tokens; }
  std::span<const int64_t> document_starts(Split split) const {
    return part(split).document_starts;
  }
  // DocumentKind of each document, as int32 (see data_shards.h).
  std::span<const int32_t> document_kinds(Split split) const { return part(split).document_kinds; }
  // The largest id in either split (-1 when both are empty), to check against a model's vocabulary.
  int32_t max_token_id() const { return max_token_id_; }
  // data.json as read.
  const nlohmann::json& info() const { return info_; }

 private:
  struct Part {
    std::shared_ptr<const SafetensorsFile> file;  // keeps the mapping alive
    std::span<const int32_t> tokens;
    std::span<const int64_t> document_starts;
    std::span<const int32_t> document_kinds;
  };
  const Part& part(Split split) const { return split == Split::kTrain ? train_ : heldout_; }
  Part open_part(Split split);

  std::filesystem::path directory_;
  nlohmann::json info_;
  int64_t vocab_size_ = 0;
  std::string tokenizer_sha256_;
  int32_t bos_id_ = 0;
  int32_t max_token_id_ = -1;
  Part train_;
  Part heldout_;
};

// Throws dsa::Error when `data` was built with another tokenizer than `tokenizer_json` (their
// SHA-256 differ), naming both.
void check_same_tokenizer(const TokenDataset& data, const std::filesystem::path& tokenizer_json);
// Throws dsa::Error when a token of `data` is outside a model's vocabulary of `model_vocab_size`.
void check_vocabulary(const TokenDataset& data, int64_t model_vocab_size);

}  // namespace dsa::train

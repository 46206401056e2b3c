#include "train/data_dataset.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json_strict.h"
#include "train/data_sha256.h"

namespace dsa::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const json& field(const json& object, std::string_view key, std::string_view where,
                  const fs::path& file) {
  if (!object.is_object() || !object.contains(key)) {
    fail("{}: missing key '{}{}'", file.string(), where, key);
  }
  return object.at(std::string(key));
}

int64_t int_field(const json& object, std::string_view key, std::string_view where,
                  const fs::path& file) {
  const json& value = field(object, key, where, file);
  if (!value.is_number_integer()) {
    fail("{}: '{}{}' must be an integer, not {}", file.string(), where, key,
         json_type_phrase(value));
  }
  return value.get<int64_t>();
}

std::string string_field(const json& object, std::string_view key, std::string_view where,
                         const fs::path& file) {
  const json& value = field(object, key, where, file);
  if (!value.is_string()) {
    fail("{}: '{}{}' must be a string, not {}", file.string(), where, key, json_type_phrase(value));
  }
  return value.get<std::string>();
}

template <typename T>
std::span<const T> vector_tensor(const SafetensorsFile& file, std::string_view name, DType dtype) {
  const TensorInfo* info = file.find(name);
  if (info == nullptr) fail("{}: no tensor '{}'", file.path().string(), name);
  if (info->dtype != dtype || info->shape.rank() != 1) {
    fail("{}: tensor '{}' must be {} of rank 1, found {} {}", file.path().string(), name,
         dtype_name(dtype), dtype_name(info->dtype), info->shape.to_string());
  }
  const TensorView view = file.view(name);
  return {static_cast<const T*>(view.raw_data()), size_t(info->shape[0])};
}

}  // namespace

TokenDataset::Part TokenDataset::open_part(Split split) {
  const std::string name(split_name(split));
  const fs::path data_json = directory_ / kDataJsonName;
  const json& entry = field(field(info_, "splits", "", data_json), name, "splits.", data_json);
  const std::string where = "splits." + name + ".";
  const int64_t expected_tokens = int_field(entry, "tokens", where, data_json);
  const int64_t expected_documents = int_field(entry, "documents", where, data_json);
  const fs::path path = directory_ / split_file_name(split);
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    fail("{}: the {} split file is missing (data.json names it)", path.string(), name);
  }
  Part part;
  part.file = std::make_shared<const SafetensorsFile>(path);
  part.tokens = vector_tensor<int32_t>(*part.file, kTokensTensor, DType::I32);
  part.document_starts = vector_tensor<int64_t>(*part.file, kDocumentStartsTensor, DType::I64);
  part.document_kinds = vector_tensor<int32_t>(*part.file, kDocumentKindsTensor, DType::I32);

  const std::string file = path.string();
  if (int64_t(part.tokens.size()) != expected_tokens ||
      int64_t(part.document_starts.size()) != expected_documents) {
    fail("{}: holds {} tokens in {} documents, data.json says {} in {} (a stale or mixed build?)",
         file, part.tokens.size(), part.document_starts.size(), expected_tokens,
         expected_documents);
  }
  if (part.document_kinds.size() != part.document_starts.size()) {
    fail("{}: {} document kinds for {} documents", file, part.document_kinds.size(),
         part.document_starts.size());
  }
  if (!part.tokens.empty() && (part.document_starts.empty() || part.document_starts[0] != 0)) {
    fail("{}: the first document must start at token 0", file);
  }
  const int64_t n = int64_t(part.tokens.size());
  for (size_t d = 0; d < part.document_starts.size(); ++d) {
    const int64_t start = part.document_starts[d];
    if (start < 0 || start >= n || (d > 0 && start <= part.document_starts[d - 1])) {
      fail("{}: document {} starts at token {}, not increasing inside [0, {})", file, d, start, n);
    }
    if (part.tokens[size_t(start)] != bos_id_) {
      fail("{}: document {} starts with token {}, not the BOS token {}", file, d,
           part.tokens[size_t(start)], bos_id_);
    }
    const int32_t kind = part.document_kinds[d];
    if (kind < 0 || kind >= kDocumentKindCount) {
      fail("{}: document {} has kind {}, outside [0, {})", file, d, kind, kDocumentKindCount);
    }
  }
  for (size_t i = 0; i < part.tokens.size(); ++i) {
    const int32_t id = part.tokens[i];
    if (id < 0 || id >= vocab_size_) {
      fail("{}: token {} is id {}, outside the vocabulary [0, {})", file, i, id, vocab_size_);
    }
    max_token_id_ = std::max(max_token_id_, id);
  }
  return part;
}

TokenDataset TokenDataset::open(const fs::path& dir) {
  TokenDataset data;
  data.directory_ = dir;
  const fs::path data_json = dir / kDataJsonName;
  std::ifstream in(data_json, std::ios::binary);
  if (!in) {
    std::error_code error;
    if (!fs::is_directory(dir, error)) fail("{}: no such data set folder", dir.string());
    fail("{}: cannot read it (is {} the output of `dsa data build`?)", data_json.string(),
         dir.string());
  }
  std::ostringstream text;
  text << in.rdbuf();
  data.info_ = parse_json_strict(text.str(), data_json.string());
  const std::string format = string_field(data.info_, "format", "", data_json);
  if (format != kDataFormatName) {
    fail("{}: format is '{}', expected '{}'", data_json.string(), format, kDataFormatName);
  }
  const int64_t version = int_field(data.info_, "format_version", "", data_json);
  if (version != kDataFormatVersion) {
    fail("{}: format_version is {}, this build reads {} (rebuild the data set)", data_json.string(),
         version, kDataFormatVersion);
  }
  const json& tokenizer = field(data.info_, "tokenizer", "", data_json);
  data.tokenizer_sha256_ = string_field(tokenizer, "sha256", "tokenizer.", data_json);
  data.vocab_size_ = int_field(tokenizer, "vocab_size", "tokenizer.", data_json);
  const int64_t bos = int_field(tokenizer, "bos_id", "tokenizer.", data_json);
  if (data.vocab_size_ < 1 || data.vocab_size_ > INT32_MAX || bos < 0 || bos >= data.vocab_size_) {
    fail("{}: tokenizer.vocab_size {} and tokenizer.bos_id {} are inconsistent", data_json.string(),
         data.vocab_size_, bos);
  }
  data.bos_id_ = int32_t(bos);
  data.train_ = data.open_part(Split::kTrain);
  data.heldout_ = data.open_part(Split::kHeldout);
  return data;
}

void check_same_tokenizer(const TokenDataset& data, const fs::path& tokenizer_json) {
  const std::string sha = sha256_file_hex(tokenizer_json);
  if (sha != data.tokenizer_sha256()) {
    fail(
        "tokenizer mismatch: {} has SHA-256 {}, but the data set {} was built with a tokenizer "
        "of SHA-256 {} (rebuild it with `dsa data build --tokenizer {}`)",
        tokenizer_json.string(), sha, data.directory().string(), data.tokenizer_sha256(),
        tokenizer_json.string());
  }
}

void check_vocabulary(const TokenDataset& data, int64_t model_vocab_size) {
  if (data.max_token_id() >= model_vocab_size) {
    fail(
        "the data set {} holds token id {}, outside the model's vocabulary of {} (its tokenizer "
        "has {} tokens)",
        data.directory().string(), data.max_token_id(), model_vocab_size, data.vocab_size());
  }
}

}  // namespace dsa::train

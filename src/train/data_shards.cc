#include "train/data_shards.h"

#include <cstring>

#include "core/error.h"
#include "core/safetensors_writer.h"

namespace dsa::train {

std::string_view split_name(Split split) { return split == Split::kTrain ? "train" : "heldout"; }

std::string split_file_name(Split split) { return std::string(split_name(split)) + ".safetensors"; }

std::string_view document_kind_name(DocumentKind kind) {
  switch (kind) {
    case DocumentKind::kText:
      return "text";
    case DocumentKind::kPasskey:
      return "passkey";
    case DocumentKind::kKeyValueRecall:
      return "kv_recall";
    case DocumentKind::kNeedle:
      return "needle";
  }
  DSA_CHECK(false, "unknown document kind {}", int(kind));
  return {};
}

std::optional<DocumentKind> parse_document_kind(std::string_view name) {
  for (int i = 0; i < kDocumentKindCount; ++i) {
    if (document_kind_name(DocumentKind(i)) == name) return DocumentKind(i);
  }
  return std::nullopt;
}

void SplitTokens::append_document(int32_t bos_id, std::span<const int32_t> body,
                                  DocumentKind kind) {
  document_starts.push_back(int64_t(tokens.size()));
  document_kinds.push_back(int32_t(kind));
  tokens.push_back(bos_id);
  tokens.insert(tokens.end(), body.begin(), body.end());
}

void write_split_file(const std::filesystem::path& path, const SplitTokens& split) {
  DSA_CHECK(split.document_starts.size() == split.document_kinds.size(),
            "{} document starts but {} kinds", split.document_starts.size(),
            split.document_kinds.size());
  // The writer takes views; the vectors outlive the write, and an empty one has nothing to copy.
  auto copy = [](const void* data, size_t bytes) {
    return [data, bytes](std::span<uint8_t> out) {
      DSA_CHECK(out.size() == bytes, "tensor of {} bytes filled with {}", out.size(), bytes);
      if (bytes > 0) std::memcpy(out.data(), data, bytes);
    };
  };
  SafetensorsWriter writer;
  writer.add(std::string(kTokensTensor), DType::I32, Shape{int64_t(split.tokens.size())},
             copy(split.tokens.data(), split.tokens.size() * sizeof(int32_t)));
  writer.add(std::string(kDocumentStartsTensor), DType::I64,
             Shape{int64_t(split.document_starts.size())},
             copy(split.document_starts.data(), split.document_starts.size() * sizeof(int64_t)));
  writer.add(std::string(kDocumentKindsTensor), DType::I32,
             Shape{int64_t(split.document_kinds.size())},
             copy(split.document_kinds.data(), split.document_kinds.size() * sizeof(int32_t)));
  writer.set_metadata("format", std::string(kDataFormatName));
  writer.write(path);
}

}  // namespace dsa::train

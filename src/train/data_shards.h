// The on-disk format of a token data set, the output of `dsa data build` (docs/data.md):
//
//   OUT/data.json           what was built: tokenizer sha256 and vocabulary, counts per split and
//                           per kind of document, the sources, the seed, the command
//   OUT/train.safetensors   the training split
//   OUT/heldout.safetensors the held-out split
//
// Each split file holds three tensors:
//   tokens           I32 [N]  token ids; every document starts with the BOS token
//   document_starts  I64 [D]  where each document's BOS is, increasing, the first one 0
//   document_kinds   I32 [D]  DocumentKind of each document (text or one synthetic task)
// The stream is BOS d0 BOS d1 ... so a window that begins at a document start begins with BOS, as
// a prompt does at inference.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::train {

enum class Split { kTrain, kHeldout };
std::string_view split_name(Split split);  // "train", "heldout"

// What a document is. The values are stored in document_kinds: never renumber them.
enum class DocumentKind : int32_t { kText = 0, kPasskey = 1, kKeyValueRecall = 2, kNeedle = 3 };
inline constexpr int kDocumentKindCount = 4;
std::string_view document_kind_name(DocumentKind kind);  // "text", "passkey", "kv_recall", "needle"
std::optional<DocumentKind> parse_document_kind(std::string_view name);

inline constexpr int kDataFormatVersion = 1;
inline constexpr std::string_view kDataFormatName = "dsa-token-dataset";
inline constexpr std::string_view kDataJsonName = "data.json";
inline constexpr std::string_view kTokensTensor = "tokens";
inline constexpr std::string_view kDocumentStartsTensor = "document_starts";
inline constexpr std::string_view kDocumentKindsTensor = "document_kinds";
std::string split_file_name(Split split);  // "train.safetensors", "heldout.safetensors"

// One split in memory, as the builder assembles it.
struct SplitTokens {
  std::vector<int32_t> tokens;           // [N]
  std::vector<int64_t> document_starts;  // [D]
  std::vector<int32_t> document_kinds;   // [D]

  // Appends BOS followed by `body`.
  void append_document(int32_t bos_id, std::span<const int32_t> body, DocumentKind kind);
  int64_t documents() const { return int64_t(document_starts.size()); }
};

// Writes a split file atomically (temporary file, fsync, rename).
void write_split_file(const std::filesystem::path& path, const SplitTokens& split);

}  // namespace dsa::train

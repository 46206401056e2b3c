// Reading Hugging Face safetensors files and checkpoints.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [b,
//   e]}}
// then the data section; offsets are relative to its start. Files are memory-mapped and tensors
// are zero-copy views into the mapping. A checkpoint is a folder holding model.safetensors, or
// shards listed by model.safetensors.index.json ({"weight_map": {tensor: shard file}}).
//
// Every malformed input is a dsa::Error naming the file and, where there is one, the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace dsa {

// Largest header accepted (the reference implementation's limit): a larger one is corruption.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;
// Longest shard file name an index may give (NAME_MAX of Linux file systems). Shard names are
// plain file names in the checkpoint folder: no '/' or '\\', not "." or "..", no NUL byte.
constexpr size_t kMaxShardNameBytes = 255;

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t data_begin = 0;  // byte offsets relative to the data section
  uint64_t data_end = 0;
  uint64_t nbytes() const { return data_end - data_begin; }
};

// A read-only memory mapping of a whole file (MAP_PRIVATE, PROT_READ; an empty file maps to an
// empty span). A file truncated by another process while mapped raises SIGBUS on access, as with
// any mapping.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Parses and validates a safetensors header against the bytes of the whole file. `source` names
// the file in error messages. Exposed for the fuzz target and tests.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + N: where the data section starts in the file
};
SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> file_bytes,
                                           std::string_view source);

// One safetensors file, memory-mapped.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;  // nullptr if absent
  // Zero-copy view of a tensor; throws dsa::Error naming the file if absent. The view is
  // read-only memory: never write through it. The format does not require tensors to be aligned;
  // a tensor whose data is not aligned to its element size is refused here (typed access would
  // be undefined behaviour), while bytes() reads any tensor.
  TensorView view(std::string_view name) const;
  std::span<const uint8_t> bytes(const TensorInfo& info) const;

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A checkpoint: a folder holding model.safetensors or model.safetensors.index.json (both at once
// is an error: one of them is stale), a single .safetensors file, or an index file itself. Every
// shard is opened and checked up front: an index naming a missing shard, a shard name that is not
// a plain file name in the folder, a shard that is not a regular file (or a symbolic link to one:
// Hugging Face's cache links shards to blobs), a tensor its shard lacks, or a tensor found in two
// shards is a dsa::Error. The index is read whole and limited to kMaxTextFileBytes.
// Views stay valid while the Checkpoint lives.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& path);

  const std::filesystem::path& directory() const { return directory_; }
  std::vector<std::string> tensor_names() const;  // sorted
  size_t tensor_count() const { return owner_.size(); }
  bool contains(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;          // throws dsa::Error if absent
  TensorView view(std::string_view name) const;                 // throws dsa::Error if absent
  std::span<const uint8_t> bytes(std::string_view name) const;  // throws dsa::Error if absent
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  size_t owner_index(std::string_view name) const;  // throws dsa::Error if absent
  // The weight_map of an index file: tensor -> shard path inside directory_ (checked to exist).
  std::map<std::string, std::filesystem::path> read_index(
      const std::filesystem::path& index_path) const;

  std::filesystem::path directory_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t, std::less<>> owner_;  // tensor name -> index into files_
};

}  // namespace dsa

// Memory-mapped safetensors files and checkpoints (the header checks live in
// safetensors_header.cc).
#include "core/safetensors.h"

#include <sys/mman.h>

#include <set>
#include <system_error>

#include "core/error.h"
#include "core/file_read.h"
#include "core/json_strict.h"
#include "core/printable.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string errno_message() { return std::system_category().message(errno); }

// Why `shard` cannot name a shard file, or empty when it can. A shard must be a plain file name in
// the checkpoint folder: with a folder part, a symlinked folder inside the checkpoint could lead
// anywhere on the machine (and its bytes would end up in error messages). The file itself may be
// a symbolic link, as in Hugging Face's cache (snapshots/<rev>/model.safetensors ->
// ../../blobs/<hash>): the user chose to put that link in the folder.
std::string shard_name_problem(std::string_view shard) {
  if (shard.empty()) return "it is empty";
  if (shard.size() > kMaxShardNameBytes) {
    return fmt::format("it is longer than {} bytes", kMaxShardNameBytes);
  }
  if (shard == "." || shard == "..") return "it names a folder";
  if (shard.find('/') != std::string_view::npos || shard.find('\\') != std::string_view::npos) {
    return "it has a folder part (a shard must be a file name in the checkpoint folder)";
  }
  if (shard.find('\0') != std::string_view::npos) return "it contains a NUL byte";
  return {};
}

}  // namespace

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  // Opened non-blocking and checked with fstat first: a FIFO or device named like a shard must be
  // refused, not waited on or mapped.
  const RegularFile file(path, "safetensors file");
  size_ = size_t(file.size());
  // mmap refuses length 0, and an empty file needs no mapping: bytes() is then an empty span.
  if (size_ > 0) {
    void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.descriptor(), 0);
    if (mapping == MAP_FAILED) fail("cannot map {}: {}", path.string(), errno_message());
    data_ = static_cast<const uint8_t*>(mapping);
  }
  // The mapping stays valid after the descriptor is closed.
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const fs::path& path)
    : file_(std::make_shared<MappedFile>(path)),
      header_(parse_safetensors_header(file_->bytes(), path.string())) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& info) const {
  return file_->bytes().subspan(size_t(header_.data_offset + info.data_begin),
                                size_t(info.nbytes()));
}

TensorView SafetensorsFile::view(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) fail("{}: no tensor '{}'", path().string(), name);
  const std::span<const uint8_t> data = bytes(*info);
  // Typed access through a misaligned pointer is undefined behaviour; the format allows such
  // files, so they are refused here rather than read wrongly (bytes() still works).
  if (reinterpret_cast<uintptr_t>(data.data()) % dtype_size(info->dtype) != 0) {
    fail("{}: tensor '{}' ({}) starts at file offset {}, not aligned to its element size",
         path().string(), name, dtype_name(info->dtype), header_.data_offset + info->data_begin);
  }
  return TensorView(const_cast<uint8_t*>(data.data()), info->dtype, info->shape);
}

Checkpoint::Checkpoint(const fs::path& path) {
  std::error_code error;
  fs::path index_path;
  std::vector<fs::path> shard_files;
  if (fs::is_directory(path, error)) {
    directory_ = path;
    const bool has_single = fs::exists(path / kSingleFile, error);
    const bool has_index = fs::exists(path / kIndexFile, error);
    if (has_single && has_index) {
      fail("{} holds both {} and {}; remove the stale one", path.string(), kSingleFile, kIndexFile);
    }
    if (!has_single && !has_index) {
      fail("{} is not a checkpoint: it holds neither {} nor {}", path.string(), kSingleFile,
           kIndexFile);
    }
    if (has_single) shard_files.push_back(path / kSingleFile);
    if (has_index) index_path = path / kIndexFile;
  } else {
    if (!fs::exists(path, error)) fail("checkpoint {} does not exist", path.string());
    directory_ = path.has_parent_path() ? path.parent_path() : fs::path(".");
    if (path.filename().string().ends_with(".index.json")) {
      index_path = path;
    } else {
      shard_files.push_back(path);
    }
  }

  std::map<std::string, fs::path> index_owner;  // tensor -> shard, as the index says
  if (!index_path.empty()) {
    index_owner = read_index(index_path);
    std::set<fs::path> shards;  // sorted, so files() lists model-00001-of-... first
    for (const auto& entry : index_owner) shards.insert(entry.second);
    shard_files.assign(shards.begin(), shards.end());
  }

  files_.reserve(shard_files.size());
  for (const fs::path& file : shard_files) {
    files_.emplace_back(file);
    const size_t file_index = files_.size() - 1;
    for (const TensorInfo& info : files_.back().tensors()) {
      const auto [it, inserted] = owner_.emplace(info.name, file_index);
      if (!inserted) {
        fail("tensor '{}' is in two shards: {} and {}", printable_excerpt(info.name),
             files_[it->second].path().string(), file.string());
      }
    }
  }
  for (const auto& [tensor, file] : index_owner) {
    const auto it = owner_.find(tensor);
    if (it == owner_.end() || files_[it->second].path() != file) {
      fail("{}: maps tensor '{}' to {}, which does not contain it", index_path.string(),
           printable_excerpt(tensor), file.string());
    }
  }
}

std::map<std::string, fs::path> Checkpoint::read_index(const fs::path& index_path) const {
  const std::string source = index_path.string();
  const nlohmann::json index =
      parse_json_strict(read_regular_file(index_path, "safetensors index"), source, "key");
  if (!index.is_object())
    fail("{}: index must be a JSON object, not {}", source, json_type_phrase(index));
  const auto weight_map = index.find("weight_map");
  if (weight_map == index.end()) fail("{}: no 'weight_map'", source);
  if (!weight_map->is_object()) {
    fail("{}: 'weight_map' must be an object, not {}", source, json_type_phrase(*weight_map));
  }
  if (weight_map->empty()) fail("{}: 'weight_map' lists no tensors", source);
  std::map<std::string, fs::path> owner;
  for (const auto& [tensor, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      fail("{}: tensor '{}' maps to {}, not a shard file name", source, printable_excerpt(tensor),
           json_type_phrase(shard));
    }
    const std::string& name = shard.get_ref<const std::string&>();
    const std::string problem = shard_name_problem(name);
    if (!problem.empty()) {
      fail("{}: tensor '{}' names shard '{}', which is not a file inside {}: {}", source,
           printable_excerpt(tensor), printable_excerpt(name), directory_.string(), problem);
    }
    const fs::path file = directory_ / name;
    // Only existence is checked here (a dangling link counts as missing); what the file is, and
    // whether it can be read, is checked when it is opened.
    std::error_code error;
    if (!fs::exists(file, error)) {
      fail("{}: tensor '{}' is in shard {}, which does not exist", source,
           printable_excerpt(tensor), file.string());
    }
    owner.emplace(tensor, file);
  }
  return owner;
}

std::span<const uint8_t> Checkpoint::bytes(std::string_view name) const {
  const SafetensorsFile& file = files_[owner_index(name)];
  return file.bytes(*file.find(name));
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(owner_.size());
  for (const auto& entry : owner_) names.push_back(entry.first);
  return names;
}

bool Checkpoint::contains(std::string_view name) const { return owner_.find(name) != owner_.end(); }

size_t Checkpoint::owner_index(std::string_view name) const {
  const auto it = owner_.find(name);
  if (it == owner_.end()) fail("checkpoint {} has no tensor '{}'", directory_.string(), name);
  return it->second;
}

const TensorInfo& Checkpoint::info(std::string_view name) const {
  return *files_[owner_index(name)].find(name);
}

TensorView Checkpoint::view(std::string_view name) const {
  return files_[owner_index(name)].view(name);
}

}  // namespace dsa

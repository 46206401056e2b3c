// Memory-mapped safetensors files and checkpoints (the header checks live in
// safetensors_header.cc).
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <system_error>

#include "core/error.h"
#include "core/json_strict.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string errno_message() { return std::system_category().message(errno); }

std::string read_small_file(const fs::path& path) {
  const MappedFile file(path);
  if (file.bytes().size() > kMaxSafetensorsHeaderBytes) {
    fail("{}: {} bytes is too large for an index file", path.string(), file.bytes().size());
  }
  return std::string(reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size());
}

// A shard named by an index must be a relative path inside the checkpoint folder.
fs::path shard_path(const fs::path& directory, const std::string& shard, const fs::path& index,
                    const std::string& tensor) {
  const fs::path relative = fs::path(shard).lexically_normal();
  if (shard.empty() || relative.is_absolute() || relative.empty() ||
      *relative.begin() == fs::path("..") || relative == fs::path(".") ||
      relative.filename().empty()) {
    fail("{}: tensor '{}' names shard '{}', which is not a file inside {}", index.string(), tensor,
         shard, directory.string());
  }
  return directory / relative;
}

}  // namespace

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open {}: {}", path.string(), errno_message());
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const std::string message = errno_message();
    ::close(fd);
    fail("cannot stat {}: {}", path.string(), message);
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    fail("{} is not a regular file", path.string());
  }
  size_ = size_t(info.st_size);
  // mmap refuses length 0, and an empty file needs no mapping: bytes() is then an empty span.
  if (size_ > 0) {
    void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const std::string message = errno_message();
      ::close(fd);
      fail("cannot map {}: {}", path.string(), message);
    }
    data_ = static_cast<const uint8_t*>(mapping);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
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
        fail("tensor '{}' is in two shards: {} and {}", info.name,
             files_[it->second].path().string(), file.string());
      }
    }
  }
  for (const auto& [tensor, file] : index_owner) {
    const auto it = owner_.find(tensor);
    if (it == owner_.end() || files_[it->second].path() != file) {
      fail("{}: maps tensor '{}' to {}, which does not contain it", index_path.string(), tensor,
           file.string());
    }
  }
}

std::map<std::string, fs::path> Checkpoint::read_index(const fs::path& index_path) const {
  const std::string source = index_path.string();
  const nlohmann::json index = parse_json_strict(read_small_file(index_path), source, "key");
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
      fail("{}: tensor '{}' maps to {}, not a shard file name", source, tensor,
           json_type_phrase(shard));
    }
    const fs::path file = shard_path(directory_, shard.get<std::string>(), index_path, tensor);
    std::error_code error;
    if (!fs::is_regular_file(file, error)) {
      fail("{}: tensor '{}' is in shard {}, which does not exist", source, tensor, file.string());
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

#include "core/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>

#include "core/error.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

std::string errno_message() { return std::system_category().message(errno); }

// A file written under a temporary name beside `target` and renamed over it by commit(). If it
// is destroyed uncommitted (an exception while writing), the temporary file is removed and the
// target is left as it was.
class AtomicFile {
 public:
  explicit AtomicFile(fs::path target) : target_(std::move(target)) {
    static std::atomic<uint64_t> counter{0};
    const fs::path folder = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    temp_ = folder / fmt::format(".{}.tmp.{}.{}", target_.filename().string(), getpid(),
                                 counter.fetch_add(1));
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create {}: {}", temp_.string(), errno_message());
  }

  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const uint8_t> bytes) {
    while (!bytes.empty()) {
      const ssize_t written = ::write(fd_, bytes.data(), bytes.size());
      if (written < 0) {
        if (errno == EINTR) continue;
        fail("cannot write {}: {}", temp_.string(), errno_message());
      }
      bytes = bytes.subspan(size_t(written));
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail("cannot flush {}: {}", temp_.string(), errno_message());
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("cannot close {}: {}", temp_.string(), errno_message());
    if (::rename(temp_.c_str(), target_.c_str()) != 0) {
      fail("cannot rename {} to {}: {}", temp_.string(), target_.string(), errno_message());
    }
    committed_ = true;
    sync_folder();
  }

 private:
  // Makes the rename itself durable. Best effort: some file systems refuse fsync on folders, and
  // the file's contents are already on disk.
  void sync_folder() const {
    const fs::path folder = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
  }

  fs::path target_;
  fs::path temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// The JSON header: __metadata__ first, then the tensors in data-offset order, padded with spaces
// to a multiple of 8 bytes so that the data section starts 8-byte aligned.
std::string header_text(std::span<const PendingTensor* const> tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const PendingTensor* tensor : tensors) {
    const uint64_t end = offset + tensor->nbytes();
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(dtype_name(tensor->dtype));
    entry["shape"] = std::vector<int64_t>(tensor->shape.dims().begin(), tensor->shape.dims().end());
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
    header[tensor->name] = std::move(entry);
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// Writes one safetensors file. Tensors are laid out by element size, largest first (stable, so
// otherwise in the order given): the data section starts 8-aligned, so every tensor then starts
// at a multiple of its element size and typed views into the mapping are aligned. Returns the
// data bytes written; `progress` receives `bytes_before` plus the bytes written so far.
uint64_t write_safetensors(const fs::path& path, std::span<const PendingTensor* const> given,
                           const std::map<std::string, std::string>& metadata,
                           const std::function<void(uint64_t)>& progress, uint64_t bytes_before) {
  std::vector<const PendingTensor*> tensors(given.begin(), given.end());
  std::stable_sort(tensors.begin(), tensors.end(), [](const auto* a, const auto* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });
  const std::string header = header_text(tensors, metadata);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = uint8_t(uint64_t(header.size()) >> (8 * i));

  AtomicFile file(path);
  file.write(length);
  file.write({reinterpret_cast<const uint8_t*>(header.data()), header.size()});
  // One buffer, grown to the largest tensor, zeroed before each fill so that a filler that skips
  // bytes writes zeros rather than the previous tensor's data.
  std::vector<uint8_t> buffer;
  uint64_t written = 0;
  for (const PendingTensor* tensor : tensors) {
    const size_t size = size_t(tensor->nbytes());
    buffer.assign(size, 0);
    tensor->fill(std::span<uint8_t>(buffer.data(), size));
    file.write({buffer.data(), size});
    written += size;
    if (progress) progress(bytes_before + written);
  }
  file.commit();
  return written;
}

void remove_stale(const fs::path& path) {
  std::error_code error;
  fs::remove(path, error);
  if (error) fail("cannot remove stale {}: {}", path.string(), error.message());
}

}  // namespace

void SafetensorsWriter::add(std::string name, DType dtype, Shape shape, TensorFiller fill) {
  if (name == "__metadata__") fail("tensor name '__metadata__' is reserved by safetensors");
  for (const PendingTensor& tensor : tensors_) {
    if (tensor.name == name) fail("tensor '{}' added twice to a safetensors writer", name);
  }
  tensors_.push_back({std::move(name), dtype, shape, std::move(fill)});
}

void SafetensorsWriter::add(std::string name, const TensorView& tensor) {
  DSA_CHECK(tensor.is_contiguous(), "tensor '{}' must be contiguous to be written", name);
  add(std::move(name), tensor.dtype(), tensor.shape(), [tensor](std::span<uint8_t> out) {
    if (!out.empty()) std::memcpy(out.data(), tensor.raw_data(), out.size());
  });
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

uint64_t SafetensorsWriter::total_bytes() const {
  uint64_t total = 0;
  for (const PendingTensor& tensor : tensors_) total += tensor.nbytes();
  return total;
}

void SafetensorsWriter::write(const fs::path& path,
                              const std::function<void(uint64_t)>& on_tensor_written) const {
  std::vector<const PendingTensor*> order;
  for (const PendingTensor& tensor : tensors_) order.push_back(&tensor);
  write_safetensors(path, order, metadata_, on_tensor_written, 0);
}

void SafetensorsWriter::write_checkpoint(
    const fs::path& directory, uint64_t max_shard_bytes,
    const std::function<void(uint64_t)>& on_tensor_written) const {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) fail("cannot create folder {}: {}", directory.string(), error.message());

  // Greedy split in insertion order: a shard takes tensors until the next would overflow it; a
  // tensor larger than max_shard_bytes gets a shard of its own.
  std::vector<std::vector<const PendingTensor*>> shards;
  uint64_t shard_bytes = 0;
  for (const PendingTensor& tensor : tensors_) {
    if (shards.empty() ||
        (!shards.back().empty() && shard_bytes + tensor.nbytes() > max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&tensor);
    shard_bytes += tensor.nbytes();
  }

  const fs::path single = directory / "model.safetensors";
  const fs::path index = directory / "model.safetensors.index.json";
  if (shards.size() <= 1) {
    write(single, on_tensor_written);
    remove_stale(index);  // a reader must not find an index from an earlier sharded write
    return;
  }

  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t written = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    written +=
        write_safetensors(directory / file, shards[i], metadata_, on_tensor_written, written);
    for (const PendingTensor* tensor : shards[i]) weight_map[tensor->name] = file;
  }
  nlohmann::ordered_json index_json = nlohmann::ordered_json::object();
  index_json["metadata"] = {{"total_size", written}};
  index_json["weight_map"] = std::move(weight_map);
  write_file_atomically(index, index_json.dump(2) + "\n");
  remove_stale(single);
}

void write_file_atomically(const fs::path& path, std::string_view contents) {
  AtomicFile file(path);
  file.write({reinterpret_cast<const uint8_t*>(contents.data()), contents.size()});
  file.commit();
}

}  // namespace dsa

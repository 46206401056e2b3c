// Writing safetensors files and sharded checkpoints, atomically: each file is written to a
// temporary name in the same folder, flushed, then renamed over the target, so a reader never
// sees a half-written file and a crash leaves the old file intact.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace dsa {

// Fills the bytes of one tensor (exactly numel * dtype_size bytes, zeroed beforehand). Called
// once, while writing, so large checkpoints can be generated without holding every tensor in
// memory. An exception from it aborts the write and leaves the target file untouched.
using TensorFiller = std::function<void(std::span<uint8_t> out)>;

struct PendingTensor {
  std::string name;
  DType dtype;
  Shape shape;
  TensorFiller fill;
  uint64_t nbytes() const { return uint64_t(shape.numel()) * dtype_size(dtype); }
};

class SafetensorsWriter {
 public:
  // Throws dsa::Error on a duplicate name.
  void add(std::string name, DType dtype, Shape shape, TensorFiller fill);
  // Copies the view's bytes when the file is written (the view must stay valid until then).
  void add(std::string name, const TensorView& tensor);
  void set_metadata(std::string key, std::string value);

  uint64_t total_bytes() const;
  const std::vector<PendingTensor>& tensors() const { return tensors_; }

  // Writes one file. `on_tensor_written` (optional) is called after each tensor with the bytes
  // written so far, for progress bars.
  void write(const std::filesystem::path& path,
             const std::function<void(uint64_t)>& on_tensor_written = {}) const;

  // Writes a Hugging Face checkpoint into `directory`: model.safetensors if everything fits in
  // `max_shard_bytes`, else model-00001-of-0000N.safetensors shards plus
  // model.safetensors.index.json. Tensors keep the order they were added in, packed without
  // padding (a tensor is aligned to its dtype only if the bytes before it are a multiple of its
  // element size). The metadata goes into every file. Each file is replaced atomically; the index
  // is written last. A single-file write removes a stale index.json and a sharded write a stale
  // model.safetensors, so a reader never finds both; old shard files that the new index does not
  // name are left in place (unused). If a write fails midway, the shards finished before it stay
  // but no index names them.
  void write_checkpoint(const std::filesystem::path& directory, uint64_t max_shard_bytes,
                        const std::function<void(uint64_t)>& on_tensor_written = {}) const;

 private:
  std::vector<PendingTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `contents` to `path` atomically (temporary file in the same folder, fsync, rename).
void write_file_atomically(const std::filesystem::path& path, std::string_view contents);

}  // namespace dsa

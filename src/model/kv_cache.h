// The cache of one sequence: per layer, the FP8 latent of every token (FlashMLA's layout,
// latent_cache.h: 656 B for the 671B shapes) and, for V3.2, the indexer's FP8 key (128 codes +
// one fp32 scale: 132 B). Capacity is fixed at creation (the context size); tokens are appended
// by the forward pass, which advances `size()` once every layer has written them.
#pragma once

#include <cstdint>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/float_formats.h"
#include "model/config.h"
#include "ops/attention/latent_cache.h"

namespace dsa {

class KvCache {
 public:
  // Throws dsa::Error if `capacity` is not in [1, max_position_embeddings].
  KvCache(const ModelConfig& config, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }  // tokens cached (positions 0 .. size-1)
  int64_t layers() const { return int64_t(layers_.size()); }
  LatentDims latent_dims() const { return dims_; }

  // Forget positions >= `size` (e.g. to re-run a prompt's tail, or to reset with 0).
  void truncate(int64_t size);
  // Called by the forward pass after every layer has written positions [size(), new_size).
  void advance_to(int64_t new_size);

  // Latent tokens [0, tokens) of `layer` (the forward pass may read past size() the rows it has
  // just written).
  LatentCacheView latent(int64_t layer, int64_t tokens) const;
  std::byte* latent_token(int64_t layer, int64_t position);
  // The indexer key cache of `layer`: [capacity, 128] codes and [capacity] scales.
  fp8_e4m3* index_codes(int64_t layer);
  float* index_scales(int64_t layer);
  const fp8_e4m3* index_codes(int64_t layer) const;
  const float* index_scales(int64_t layer) const;

  // Bytes held per token over all layers, and in total for the capacity.
  size_t bytes_per_token() const;
  size_t bytes() const { return bytes_per_token() * size_t(capacity_); }

 private:
  struct Layer {
    AlignedBuffer latent;        // [capacity, token bytes]
    AlignedBuffer index_codes;   // [capacity, 128] e4m3 (V3.2)
    AlignedBuffer index_scales;  // [capacity] fp32 (V3.2)
  };
  LatentDims dims_;
  int64_t index_dim_ = 0;
  int64_t capacity_ = 0;
  int64_t size_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace dsa

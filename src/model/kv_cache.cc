#include "model/kv_cache.h"

#include "core/error.h"

namespace dsa {

KvCache::KvCache(const ModelConfig& config, int64_t capacity)
    : dims_{.latent = int(config.kv_lora_rank), .rope = int(config.qk_rope_head_dim)},
      index_dim_(config.has_indexer() ? config.index_head_dim : 0),
      capacity_(capacity) {
  if (capacity < 1 || capacity > config.max_position_embeddings) {
    fail(
        "context size {} is out of range: it must be between 1 and the model's "
        "max_position_embeddings ({})",
        capacity, config.max_position_embeddings);
  }
  const size_t token_bytes = latent_token_bytes(LatentCacheFormat::kFp8, dims_);
  layers_.resize(size_t(config.num_hidden_layers));
  for (Layer& layer : layers_) {
    layer.latent = AlignedBuffer(token_bytes * size_t(capacity));
    if (index_dim_ > 0) {
      layer.index_codes = AlignedBuffer(size_t(capacity * index_dim_));
      layer.index_scales = AlignedBuffer(sizeof(float) * size_t(capacity));
    }
  }
}

void KvCache::truncate(int64_t size) {
  if (size < 0 || size > size_) fail("cannot truncate a cache of {} tokens to {}", size_, size);
  size_ = size;
}

void KvCache::advance_to(int64_t new_size) {
  DSA_CHECK(new_size >= size_ && new_size <= capacity_, "cache advance {} -> {} (capacity {})",
            size_, new_size, capacity_);
  size_ = new_size;
}

LatentCacheView KvCache::latent(int64_t layer, int64_t tokens) const {
  DSA_CHECK(tokens <= capacity_, "{} tokens exceed the cache capacity {}", tokens, capacity_);
  return {.format = LatentCacheFormat::kFp8,
          .dims = dims_,
          .data = layers_.at(size_t(layer)).latent.data(),
          .num_tokens = tokens};
}

std::byte* KvCache::latent_token(int64_t layer, int64_t position) {
  DSA_CHECK(position >= 0 && position < capacity_, "position {} outside the cache ({})", position,
            capacity_);
  return layers_.at(size_t(layer)).latent.data() +
         size_t(position) * latent_token_bytes(LatentCacheFormat::kFp8, dims_);
}

fp8_e4m3* KvCache::index_codes(int64_t layer) {
  return reinterpret_cast<fp8_e4m3*>(layers_.at(size_t(layer)).index_codes.data());
}
float* KvCache::index_scales(int64_t layer) {
  return reinterpret_cast<float*>(layers_.at(size_t(layer)).index_scales.data());
}
const fp8_e4m3* KvCache::index_codes(int64_t layer) const {
  return reinterpret_cast<const fp8_e4m3*>(layers_.at(size_t(layer)).index_codes.data());
}
const float* KvCache::index_scales(int64_t layer) const {
  return reinterpret_cast<const float*>(layers_.at(size_t(layer)).index_scales.data());
}

size_t KvCache::bytes_per_token() const {
  const size_t per_layer = latent_token_bytes(LatentCacheFormat::kFp8, dims_) +
                           (index_dim_ > 0 ? size_t(index_dim_) + sizeof(float) : 0);
  return per_layer * layers_.size();
}

}  // namespace dsa

#include "model/init_weights.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <numbers>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "core/fp8_quant.h"

namespace dsa {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr int64_t kGrain = int64_t(1) << 15;  // elements per parallel chunk

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(std::string_view text) {
  uint64_t hash = 0xCBF29CE484222325ull;
  for (unsigned char ch : text) {
    hash ^= ch;
    hash *= 0x100000001B3ull;
  }
  return hash;
}

// The FP8 codes and block scales of one parameter, computed by whichever of its two fillers
// (weight, weight_scale_inv) runs first and released by each once it has copied its part.
struct Fp8Values {
  std::mutex mutex;
  bool computed = false;
  std::vector<fp8_e4m3> codes;  // [rows, cols]
  std::vector<float> scales;    // [ceil(rows/128), ceil(cols/128)]
};

void compute_fp8(const ParameterSpec& spec, uint64_t seed, ThreadPool& pool, Fp8Values& fp8) {
  if (fp8.computed) return;
  const int64_t rows = spec.shape[0];
  const int64_t cols = spec.shape[1];
  std::vector<float> values(size_t(spec.numel()));
  init_parameter_values(spec, seed, values, pool);
  fp8.codes.resize(values.size());
  fp8.scales.resize(size_t(weight_scale_rows(rows) * weight_scale_cols(cols)));
  quantize_weight_fp8(values.data(), rows, cols, fp8.codes.data(), fp8.scales.data(), pool);
  fp8.computed = true;
}

template <typename T>
void copy_out(const std::vector<T>& values, std::span<uint8_t> out) {
  DSA_CHECK(out.size() == values.size() * sizeof(T), "filler got {} bytes, expected {}", out.size(),
            values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
}

TensorFiller fp8_weight_filler(const ParameterSpec& spec, uint64_t seed, ThreadPool& pool,
                               std::shared_ptr<Fp8Values> fp8) {
  return [spec, seed, &pool, fp8](std::span<uint8_t> out) {
    std::lock_guard lock(fp8->mutex);
    compute_fp8(spec, seed, pool, *fp8);
    copy_out(fp8->codes, out);
    std::vector<fp8_e4m3>().swap(fp8->codes);
  };
}

TensorFiller fp8_scale_filler(const ParameterSpec& spec, uint64_t seed, ThreadPool& pool,
                              std::shared_ptr<Fp8Values> fp8) {
  return [spec, seed, &pool, fp8](std::span<uint8_t> out) {
    std::lock_guard lock(fp8->mutex);
    compute_fp8(spec, seed, pool, *fp8);
    copy_out(fp8->scales, out);
    std::vector<float>().swap(fp8->scales);
  };
}

// BF16 and F32 parameters are generated straight into the output bytes.
TensorFiller plain_filler(const ParameterSpec& spec, uint64_t seed, ThreadPool& pool) {
  return [spec, seed, &pool](std::span<uint8_t> out) {
    DSA_CHECK(out.size() == spec.nbytes(), "filler for {} got {} bytes, expected {}", spec.name,
              out.size(), spec.nbytes());
    const uint64_t key = init_stream_key(seed, spec.init_key);
    pool.parallel_for(spec.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float value = 0.0f;
        switch (spec.init) {
          case InitRule::kNormal:
            value = float(spec.init_std) * init_standard_normal(key, uint64_t(i));
            break;
          case InitRule::kOnes:
            value = 1.0f;
            break;
          case InitRule::kZeros:
            value = 0.0f;
            break;
        }
        if (spec.dtype == DType::BF16) {
          const bf16 bits = float_to_bf16(value);
          std::memcpy(out.data() + 2 * i, &bits, 2);
        } else {
          DSA_CHECK(spec.dtype == DType::F32, "{}: no generator for {}", spec.name,
                    dtype_name(spec.dtype));
          std::memcpy(out.data() + 4 * i, &value, 4);
        }
      }
    });
  };
}

}  // namespace

uint64_t init_stream_key(uint64_t seed, std::string_view init_key) {
  return splitmix64_mix(seed ^ fnv1a64(init_key));
}

float init_standard_normal(uint64_t key, uint64_t index) {
  const uint64_t bits = splitmix64_mix(key + (index + 1) * kGolden);
  // u1 in (0, 1] so the logarithm is finite; u2 in [0, 1).
  const double u1 = (double(bits >> 32) + 1.0) * 0x1p-32;
  const double u2 = double(bits & 0xFFFFFFFFull) * 0x1p-32;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
}

void init_parameter_values(const ParameterSpec& spec, uint64_t seed, std::span<float> out,
                           ThreadPool& pool) {
  DSA_CHECK(int64_t(out.size()) == spec.numel(), "{}: {} values for {} elements", spec.name,
            out.size(), spec.numel());
  if (spec.init != InitRule::kNormal) {
    std::fill(out.begin(), out.end(), spec.init == InitRule::kOnes ? 1.0f : 0.0f);
    return;
  }
  const uint64_t key = init_stream_key(seed, spec.init_key);
  const float std = float(spec.init_std);
  pool.parallel_for(int64_t(out.size()), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = std * init_standard_normal(key, uint64_t(i));
  });
}

void add_initial_weights(const std::vector<ParameterSpec>& parameters, uint64_t seed,
                         ThreadPool& pool, SafetensorsWriter& writer) {
  std::vector<std::shared_ptr<Fp8Values>> fp8(parameters.size());
  for (const CheckpointTensor& tensor : checkpoint_tensors(parameters)) {
    const ParameterSpec& spec = parameters[tensor.parameter];
    TensorFiller fill;
    if (!spec.fp8()) {
      fill = plain_filler(spec, seed, pool);
    } else {
      if (!fp8[tensor.parameter]) fp8[tensor.parameter] = std::make_shared<Fp8Values>();
      fill = tensor.is_scale ? fp8_scale_filler(spec, seed, pool, fp8[tensor.parameter])
                             : fp8_weight_filler(spec, seed, pool, fp8[tensor.parameter]);
    }
    writer.add(tensor.name, tensor.dtype, tensor.shape, std::move(fill));
  }
}

void write_initial_checkpoint(const std::filesystem::path& dir,
                              const std::vector<ParameterSpec>& parameters, uint64_t seed,
                              uint64_t max_shard_bytes, ThreadPool& pool,
                              const std::function<void(uint64_t)>& on_progress) {
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  add_initial_weights(parameters, seed, pool, writer);
  writer.write_checkpoint(dir, max_shard_bytes, on_progress);
}

}  // namespace dsa

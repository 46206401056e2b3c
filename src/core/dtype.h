// Element types of tensors, with the names safetensors uses for them.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace dsa {

enum class DType { F32, F16, BF16, F8_E4M3, I32, I64 };

// Bytes per element.
size_t dtype_size(DType dtype);

// The safetensors name: "F32", "F16", "BF16", "F8_E4M3", "I32", "I64".
std::string_view dtype_name(DType dtype);

// Parses a safetensors dtype name; nullopt for names this engine does not support.
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace dsa

// NumPy .npy files (format version 1.0): what `dsa logits` writes so that numpy.load and
// torch.from_numpy read our tensors directly.
//   "\x93NUMPY" 1 0, uint16 LE header length, a Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (T, V), } padded with spaces and a final
//   newline so the data starts at a multiple of 64 bytes, then the C-order data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "core/tensor.h"

namespace dsa {

// The bytes of an .npy file holding `data` (little-endian fp32) of `shape`.
std::string npy_bytes(std::span<const float> data, const Shape& shape);
// Writes them atomically to `path`; throws dsa::Error if the shape and data size disagree or the
// file cannot be written.
void write_npy(const std::filesystem::path& path, std::span<const float> data, const Shape& shape);

}  // namespace dsa

#include "model/intermediate_recorder.h"

#include <cstring>
#include <limits>

#include "core/error.h"

namespace dsa {

IntermediateSink IntermediateRecorder::sink() {
  return [this](const std::string& name, const TensorView& value) {
    DSA_CHECK(value.is_contiguous() && value.shape().rank() >= 1,
              "intermediate {} must be a contiguous tensor with a token axis", name);
    const auto* data = static_cast<const uint8_t*>(value.raw_data());
    pieces_[name].push_back({value.shape(), value.dtype(), {data, data + value.nbytes()}});
  };
}

std::vector<std::string> IntermediateRecorder::names() const {
  std::vector<std::string> out;
  for (const auto& [name, pieces] : pieces_) out.push_back(name);
  return out;
}

Tensor IntermediateRecorder::tensor(const std::string& name) const {
  const auto it = pieces_.find(name);
  if (it == pieces_.end()) fail("no intermediate named '{}' was recorded", name);
  const std::vector<Piece>& pieces = it->second;
  const Piece& first = pieces.front();
  const int rank = first.shape.rank();
  std::vector<int64_t> dims(first.shape.dims().begin(), first.shape.dims().end());
  dims[0] = 0;
  for (const Piece& p : pieces) {
    DSA_CHECK(p.dtype == first.dtype && p.shape.rank() == rank, "intermediate {} changes type",
              name);
    dims[0] += p.shape[0];
    for (int axis = 1; axis < rank; ++axis) {
      const bool grows = rank == 2 && axis == 1;
      DSA_CHECK(grows || p.shape[axis] == first.shape[axis],
                "intermediate {} changes shape between calls", name);
      dims[axis] = std::max(dims[axis], p.shape[axis]);
    }
  }
  Tensor out(first.dtype, Shape(std::span<const int64_t>(dims)));
  auto* dst = reinterpret_cast<uint8_t*>(out.view().raw_data());
  const size_t elem = dtype_size(first.dtype);
  const int64_t width = rank == 2 ? dims[1] : 1;
  for (const Piece& p : pieces) {
    if (rank != 2 || p.shape[1] == width) {
      std::memcpy(dst, p.bytes.data(), p.bytes.size());
      dst += p.bytes.size();
      continue;
    }
    for (int64_t row = 0; row < p.shape[0]; ++row) {
      std::memcpy(dst, p.bytes.data() + size_t(row * p.shape[1]) * elem, size_t(p.shape[1]) * elem);
      for (int64_t col = p.shape[1]; col < width; ++col) {
        uint8_t* cell = dst + size_t(col) * elem;
        if (first.dtype == DType::F32) {
          const float pad = -std::numeric_limits<float>::infinity();
          std::memcpy(cell, &pad, sizeof pad);
        } else {
          DSA_CHECK(first.dtype == DType::I32, "intermediate {}: cannot pad this dtype", name);
          const int32_t pad = -1;
          std::memcpy(cell, &pad, sizeof pad);
        }
      }
      dst += size_t(width) * elem;
    }
  }
  return out;
}

void IntermediateRecorder::write(const std::filesystem::path& path) const {
  std::vector<Tensor> tensors;
  SafetensorsWriter writer;
  for (const auto& [name, pieces] : pieces_) tensors.push_back(tensor(name));
  size_t i = 0;
  for (const auto& [name, pieces] : pieces_) writer.add(name, tensors[i++].view());
  writer.write(path);
}

}  // namespace dsa

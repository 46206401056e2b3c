#include "core/tensor.h"

#include <fmt/format.h>

namespace dsa {

Shape::Shape(std::initializer_list<int64_t> dims)
    : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  DSA_CHECK(dims.size() <= size_t(kMaxRank), "rank {} exceeds {}", dims.size(), kMaxRank);
  rank_ = int(dims.size());
  for (int i = 0; i < rank_; ++i) {
    DSA_CHECK(dims[i] >= 0, "negative dimension {}", dims[i]);
    dims_[i] = dims[i];
  }
}

int64_t Shape::operator[](int axis) const {
  DSA_CHECK(axis >= 0 && axis < rank_, "axis {} of a rank-{} shape", axis, rank_);
  return dims_[axis];
}

int64_t Shape::numel() const {
  int64_t count = 1;
  for (int i = 0; i < rank_; ++i) count *= dims_[i];
  return count;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i) {
    if (dims_[i] != other.dims_[i]) return false;
  }
  return true;
}

std::string Shape::to_string() const { return fmt::format("[{}]", fmt::join(dims(), ", ")); }

namespace {
Shape contiguous_strides(const Shape& shape) {
  std::array<int64_t, kMaxRank> strides{};
  int64_t stride = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return Shape(std::span<const int64_t>(strides.data(), size_t(shape.rank())));
}
}  // namespace

TensorView::TensorView(void* data, DType dtype, Shape shape)
    : data_(data), dtype_(dtype), shape_(shape), strides_(contiguous_strides(shape)) {}

TensorView::TensorView(void* data, DType dtype, Shape shape, Shape strides)
    : data_(data), dtype_(dtype), shape_(shape), strides_(strides) {
  DSA_CHECK(shape.rank() == strides.rank(), "shape {} with strides {}", shape.to_string(),
            strides.to_string());
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int i = shape_.rank() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

TensorView TensorView::operator[](int64_t index) const {
  DSA_CHECK(shape_.rank() >= 1 && index >= 0 && index < shape_[0], "index {} into shape {}", index,
            shape_.to_string());
  auto* base = static_cast<std::byte*>(data_) + index * strides_[0] * int64_t(dtype_size(dtype_));
  return TensorView(base, dtype_, Shape(shape_.dims().subspan(1)),
                    Shape(strides_.dims().subspan(1)));
}

TensorView TensorView::slice(int64_t begin, int64_t end) const {
  DSA_CHECK(shape_.rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
            "slice [{}, {}) of shape {}", begin, end, shape_.to_string());
  std::array<int64_t, kMaxRank> dims{};
  for (int i = 0; i < shape_.rank(); ++i) dims[i] = shape_[i];
  dims[0] = end - begin;
  auto* base = static_cast<std::byte*>(data_) + begin * strides_[0] * int64_t(dtype_size(dtype_));
  return TensorView(base, dtype_,
                    Shape(std::span<const int64_t>(dims.data(), size_t(shape_.rank()))), strides_);
}

TensorView TensorView::reshape(Shape shape) const {
  DSA_CHECK(is_contiguous(), "reshape of a non-contiguous view");
  DSA_CHECK(shape.numel() == numel(), "reshape {} to {}", shape_.to_string(), shape.to_string());
  return TensorView(data_, dtype_, shape);
}

Tensor::Tensor(DType dtype, Shape shape)
    : buffer_(size_t(shape.numel()) * dtype_size(dtype)), view_(buffer_.data(), dtype, shape) {}

}  // namespace dsa

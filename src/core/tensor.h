// Tensor views (a pointer, a dtype, a shape and strides in elements; PyTorch's dimension order)
// and owned tensors. Views never own memory: they point into a Tensor, a memory-mapped
// checkpoint or a caller's buffer.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include "core/aligned_buffer.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/float_formats.h"

namespace dsa {

constexpr int kMaxRank = 8;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int axis) const;
  int64_t numel() const;  // 1 for a scalar (rank 0)
  std::span<const int64_t> dims() const { return {dims_.data(), size_t(rank_)}; }
  bool operator==(const Shape& other) const;
  std::string to_string() const;  // "[2, 3, 128]"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

template <typename T>
struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<fp16> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<fp8_e4m3> { static constexpr DType value = DType::F8_E4M3; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };

class TensorView {
 public:
  TensorView() = default;
  // A contiguous (row-major) view.
  TensorView(void* data, DType dtype, Shape shape);
  TensorView(void* data, DType dtype, Shape shape, Shape strides);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  void* raw_data() const { return data_; }

  // Typed access; throws if T does not match the dtype.
  template <typename T>
  T* data() const {
    DSA_CHECK(dtype_of<T>::value == dtype_, "tensor holds {}, accessed as {}", dtype_name(dtype_),
              dtype_name(dtype_of<T>::value));
    return static_cast<T*>(data_);
  }

  // The sub-tensor at `index` along axis 0 (rank drops by one).
  TensorView operator[](int64_t index) const;
  // Rows [begin, end) along axis 0.
  TensorView slice(int64_t begin, int64_t end) const;
  // Same data, new shape; the view must be contiguous and the element count must match.
  TensorView reshape(Shape shape) const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Shape shape_;
  Shape strides_;
};

// An owned, contiguous, 64-byte aligned tensor.
class Tensor {
 public:
  Tensor() = default;
  // Zero-filled.
  Tensor(DType dtype, Shape shape);

  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }
  template <typename T>
  T* data() const {
    return view_.data<T>();
  }
  const Shape& shape() const { return view_.shape(); }
  DType dtype() const { return view_.dtype(); }
  int64_t numel() const { return view_.numel(); }

 private:
  AlignedBuffer buffer_;
  TensorView view_;
};

}  // namespace dsa

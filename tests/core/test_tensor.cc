#include <gtest/gtest.h>

#include "core/tensor.h"

namespace dsa {
namespace {

TEST(Shape, BasicsAndFormatting) {
  Shape shape{2, 3, 128};
  EXPECT_EQ(shape.rank(), 3);
  EXPECT_EQ(shape.numel(), 768);
  EXPECT_EQ(shape.to_string(), "[2, 3, 128]");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_EQ((Shape{4, 0}).numel(), 0);
  EXPECT_THROW(Shape({1, 2, 3, 4, 5, 6, 7, 8, 9}), InternalError);
  EXPECT_THROW(Shape({-1}), InternalError);
}

TEST(Tensor, OwnedTensorsAreZeroedAndAligned) {
  Tensor t(DType::BF16, {3, 5});
  EXPECT_EQ(t.view().nbytes(), 30u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.view().raw_data()) % kBufferAlignment, 0u);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t.data<bf16>()[i].bits, 0);
  EXPECT_THROW(t.data<float>(), InternalError);  // wrong element type
}

TEST(TensorView, IndexSliceReshape) {
  Tensor t(DType::F32, {4, 3});
  float* data = t.data<float>();
  for (int i = 0; i < 12; ++i) data[i] = float(i);
  const TensorView row2 = t.view()[2];
  EXPECT_EQ(row2.shape(), Shape{3});
  EXPECT_EQ(row2.data<float>()[1], 7.0f);
  const TensorView middle = t.view().slice(1, 3);
  EXPECT_EQ(middle.shape(), (Shape{2, 3}));
  EXPECT_EQ(middle.data<float>()[0], 3.0f);
  EXPECT_TRUE(middle.is_contiguous());
  const TensorView flat = t.view().reshape({12});
  EXPECT_EQ(flat.data<float>()[11], 11.0f);
  EXPECT_THROW(t.view().reshape({5}), InternalError);
  EXPECT_THROW(t.view()[4], InternalError);
  EXPECT_THROW(t.view().slice(2, 5), InternalError);
  // A column view is strided, hence not contiguous.
  TensorView column(data, DType::F32, Shape{4}, Shape{3});
  EXPECT_FALSE(column.is_contiguous());
  EXPECT_EQ(column[3].data<float>()[0], 9.0f);
}

}  // namespace
}  // namespace dsa

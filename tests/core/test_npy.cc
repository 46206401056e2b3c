// The .npy writer: the exact header NumPy's format 1.0 expects, 64-byte data alignment, data.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "core/npy.h"

namespace dsa {
namespace {

std::string header_of(const std::string& bytes) {
  const size_t length = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
  return bytes.substr(10, length);
}

TEST(Npy, MatrixHeaderAndData) {
  const std::vector<float> data = {1.0f, -2.5f, 3.0f, 0.0f, 5.0f, 6.0f};
  const std::string bytes = npy_bytes(data, Shape{2, 3});
  ASSERT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::string header = header_of(bytes);
  EXPECT_EQ((10 + header.size()) % 64, 0u);
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u);
  ASSERT_EQ(bytes.size(), 10 + header.size() + data.size() * 4);
  std::vector<float> back(data.size());
  std::memcpy(back.data(), bytes.data() + 10 + header.size(), data.size() * 4);
  EXPECT_EQ(back, data);
}

TEST(Npy, VectorShapeIsAOneTuple) {
  const std::vector<float> data = {1.0f, 2.0f, 3.0f};
  EXPECT_NE(header_of(npy_bytes(data, Shape{3})).find("'shape': (3,)"), std::string::npos);
}

TEST(Npy, ShapeDataMismatchIsAnError) {
  const std::vector<float> data = {1.0f, 2.0f};
  EXPECT_THROW(npy_bytes(data, Shape{3}), Error);
}

}  // namespace
}  // namespace dsa

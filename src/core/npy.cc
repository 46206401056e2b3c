#include "core/npy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>

#include "core/error.h"
#include "core/safetensors_writer.h"

namespace dsa {

std::string npy_bytes(std::span<const float> data, const Shape& shape) {
  if (shape.numel() != int64_t(data.size())) {
    fail("npy: shape {} holds {} values, {} given", shape.to_string(), shape.numel(), data.size());
  }
  // Python tuple syntax: "()", "(3,)", "(3, 4)".
  std::string dims = fmt::format("{}", fmt::join(shape.dims(), ", "));
  if (shape.rank() == 1) dims += ",";
  std::string header =
      fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims);
  constexpr size_t kPreamble = 10;  // magic (6) + version (2) + header length (2)
  const size_t total = (kPreamble + header.size() + 1 + 63) / 64 * 64;
  header.append(total - kPreamble - header.size() - 1, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  out += char(header.size() & 0xFF);
  out += char(header.size() >> 8);
  out += header;
  static_assert(std::endian::native == std::endian::little, "npy writer assumes little endian");
  out.append(reinterpret_cast<const char*>(data.data()), data.size_bytes());
  return out;
}

void write_npy(const std::filesystem::path& path, std::span<const float> data, const Shape& shape) {
  write_file_atomically(path, npy_bytes(data, shape));
}

}  // namespace dsa

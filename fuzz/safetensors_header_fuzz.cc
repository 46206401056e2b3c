// Feeds arbitrary bytes to parse_safetensors_header as a whole file. A dsa::Error with a
// printable message (no control bytes, valid UTF-8) is the expected answer to corrupt input; any
// other exception, a crash or a sanitizer report is a bug. An accepted
// header must describe tensors that tile the data section exactly, which is checked here.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "core/error.h"
#include "core/printable.h"
#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  try {
    const dsa::SafetensorsHeader header = dsa::parse_safetensors_header(bytes, "fuzz-input");
    if (header.data_offset > size) std::abort();
    uint64_t expected_begin = 0;
    for (const dsa::TensorInfo& tensor : header.tensors) {
      const uint64_t numel = uint64_t(tensor.shape.numel());
      if (tensor.data_begin != expected_begin || tensor.data_end < tensor.data_begin ||
          tensor.nbytes() != numel * dsa::dtype_size(tensor.dtype)) {
        std::abort();
      }
      expected_begin = tensor.data_end;
    }
    if (header.data_offset + expected_begin != size) std::abort();
  } catch (const dsa::Error& e) {
    if (dsa::printable(e.what()) != e.what()) std::abort();
  }
  return 0;
}

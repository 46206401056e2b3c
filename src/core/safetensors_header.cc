// parse_safetensors_header: every check that stands between untrusted bytes and a TensorInfo.
#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "core/json_strict.h"
#include "core/safetensors.h"

namespace dsa {
namespace {

using Json = nlohmann::json;

std::string supported_dtypes() {
  std::vector<std::string_view> names;
  for (DType dtype :
       {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32, DType::I64}) {
    names.push_back(dtype_name(dtype));
  }
  return fmt::format("{}", fmt::join(names, ", "));
}

// A non-negative JSON integer; `what` names the field in errors ("dimension 2 of 'shape'").
uint64_t unsigned_field(const Json& value, std::string_view source, std::string_view tensor,
                        std::string_view what) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    fail("{}: tensor '{}': {} is negative ({})", source, tensor, what, value.get<int64_t>());
  }
  fail("{}: tensor '{}': {} must be a non-negative integer, not {}", source, tensor, what,
       json_type_phrase(value));
}

const Json& required_field(const Json& entry, const char* key, std::string_view source,
                           std::string_view tensor) {
  const auto it = entry.find(key);
  if (it == entry.end()) fail("{}: tensor '{}' has no '{}'", source, tensor, key);
  return *it;
}

TensorInfo parse_tensor(const std::string& name, const Json& entry, std::string_view source) {
  if (!entry.is_object()) {
    fail("{}: tensor '{}': entry must be a JSON object, not {}", source, name,
         json_type_phrase(entry));
  }
  TensorInfo info;
  info.name = name;

  const Json& dtype = required_field(entry, "dtype", source, name);
  if (!dtype.is_string()) {
    fail("{}: tensor '{}': 'dtype' must be a string, not {}", source, name,
         json_type_phrase(dtype));
  }
  const auto parsed_dtype = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed_dtype) {
    fail("unsupported dtype '{}' for tensor '{}' in {} (supported: {})",
         dtype.get_ref<const std::string&>(), name, source, supported_dtypes());
  }
  info.dtype = *parsed_dtype;

  const Json& shape = required_field(entry, "shape", source, name);
  if (!shape.is_array()) {
    fail("{}: tensor '{}': 'shape' must be an array, not {}", source, name,
         json_type_phrase(shape));
  }
  if (shape.size() > size_t(kMaxRank)) {
    fail("{}: tensor '{}': rank {} exceeds the supported {}", source, name, shape.size(), kMaxRank);
  }
  std::vector<int64_t> dims;
  uint64_t nbytes = dtype_size(info.dtype);
  for (size_t axis = 0; axis < shape.size(); ++axis) {
    const uint64_t dim =
        unsigned_field(shape[axis], source, name, fmt::format("dimension {} of 'shape'", axis));
    // Every byte count must fit in int64 (TensorView's element counts) and in uint64 arithmetic.
    if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(nbytes, dim, &nbytes) ||
        nbytes > uint64_t(INT64_MAX)) {
      fail("{}: tensor '{}': shape {} overflows the byte count", source, name, shape.dump());
    }
    dims.push_back(int64_t(dim));
  }
  info.shape = Shape(std::span<const int64_t>(dims));

  const Json& offsets = required_field(entry, "data_offsets", source, name);
  if (!offsets.is_array() || offsets.size() != 2) {
    fail("{}: tensor '{}': 'data_offsets' must be an array [begin, end]", source, name);
  }
  info.data_begin = unsigned_field(offsets[0], source, name, "data_offsets begin");
  info.data_end = unsigned_field(offsets[1], source, name, "data_offsets end");
  if (info.data_begin > info.data_end) {
    fail("{}: tensor '{}': data_offsets begin {} is after end {}", source, name, info.data_begin,
         info.data_end);
  }
  if (info.nbytes() != nbytes) {
    fail("{}: tensor '{}': {} {} needs {} bytes but data_offsets [{}, {}] span {}", source, name,
         dtype_name(info.dtype), info.shape.to_string(), nbytes, info.data_begin, info.data_end,
         info.nbytes());
  }
  return info;
}

std::map<std::string, std::string> parse_metadata(const Json& value, std::string_view source) {
  if (!value.is_object()) {
    fail("{}: '__metadata__' must be an object of strings, not {}", source,
         json_type_phrase(value));
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, text] : value.items()) {
    if (!text.is_string()) {
      fail("{}: '__metadata__' value of '{}' must be a string, not {}", source, key,
           json_type_phrase(text));
    }
    metadata[key] = text.get<std::string>();
  }
  return metadata;
}

// The tensors must tile the data section exactly: sorted by offset, each starts where the previous
// ends, the first at 0 and the last at the section's end (the reference implementation rejects
// holes as well as overlaps).
void check_layout(std::vector<TensorInfo>& tensors, uint64_t data_size, std::string_view source) {
  for (const TensorInfo& info : tensors) {
    if (info.data_end > data_size) {
      fail("{}: tensor '{}': data_offsets [{}, {}] run past the {}-byte data section", source,
           info.name, info.data_begin, info.data_end, data_size);
    }
  }
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.data_begin, a.data_end) < std::tie(b.data_begin, b.data_end);
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : tensors) {
    if (info.data_begin < expected) {
      fail("{}: tensor '{}' at bytes [{}, {}) overlaps tensor '{}' at [{}, {})", source, info.name,
           info.data_begin, info.data_end, previous->name, previous->data_begin,
           previous->data_end);
    }
    if (info.data_begin > expected) {
      fail("{}: tensor '{}' starts at byte {}, leaving a gap after byte {} of the data section",
           source, info.name, info.data_begin, expected);
    }
    expected = info.data_end;
    previous = &info;
  }
  if (expected != data_size) {
    fail("{}: the data section holds {} bytes but the tensors end at byte {}", source, data_size,
         expected);
  }
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> file_bytes,
                                           std::string_view source) {
  if (file_bytes.size() < 8) {
    fail("{}: file is {} bytes, too short for a safetensors header length (8 bytes)", source,
         file_bytes.size());
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | file_bytes[size_t(i)];
  if (header_size > kMaxSafetensorsHeaderBytes) {
    fail("{}: header length {} exceeds the {}-byte limit (corrupt or not a safetensors file)",
         source, header_size, kMaxSafetensorsHeaderBytes);
  }
  if (header_size > file_bytes.size() - 8) {
    fail("{}: header length {} runs past the end of the {}-byte file", source, header_size,
         file_bytes.size());
  }
  const std::string_view text(reinterpret_cast<const char*>(file_bytes.data() + 8),
                              size_t(header_size));
  const Json header = parse_json_strict(text, source, "tensor name");
  if (!header.is_object()) {
    fail("{}: header must be a JSON object, not {}", source, json_type_phrase(header));
  }

  SafetensorsHeader result;
  result.data_offset = 8 + header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      result.metadata = parse_metadata(entry, source);
    } else {
      result.tensors.push_back(parse_tensor(name, entry, source));
    }
  }
  check_layout(result.tensors, file_bytes.size() - result.data_offset, source);
  return result;
}

}  // namespace dsa

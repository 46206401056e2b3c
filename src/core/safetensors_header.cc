// parse_safetensors_header: every check that stands between untrusted bytes and a TensorInfo.
#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "core/json_describe.h"
#include "core/json_strict.h"
#include "core/printable.h"
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
// `tensor` is the tensor's name as printed (printable_excerpt of the name from the file).
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
  const std::string shown = printable_excerpt(name);  // names may hold any bytes but NUL
  if (!entry.is_object()) {
    fail("{}: tensor '{}': entry must be a JSON object, not {}", source, shown,
         json_type_phrase(entry));
  }
  TensorInfo info;
  info.name = name;

  const Json& dtype = required_field(entry, "dtype", source, shown);
  if (!dtype.is_string()) {
    fail("{}: tensor '{}': 'dtype' must be a string, not {}", source, shown,
         json_type_phrase(dtype));
  }
  const auto parsed_dtype = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed_dtype) {
    fail("unsupported dtype '{}' for tensor '{}' in {} (supported: {})",
         printable_excerpt(dtype.get_ref<const std::string&>()), shown, source, supported_dtypes());
  }
  info.dtype = *parsed_dtype;

  const Json& shape = required_field(entry, "shape", source, shown);
  if (!shape.is_array()) {
    fail("{}: tensor '{}': 'shape' must be an array, not {}", source, shown,
         json_type_phrase(shape));
  }
  if (shape.size() > size_t(kMaxRank)) {
    fail("{}: tensor '{}': rank {} exceeds the supported {}", source, shown, shape.size(),
         kMaxRank);
  }
  std::vector<int64_t> dims;
  uint64_t nbytes = dtype_size(info.dtype);
  for (size_t axis = 0; axis < shape.size(); ++axis) {
    const uint64_t dim =
        unsigned_field(shape[axis], source, shown, fmt::format("dimension {} of 'shape'", axis));
    // Every byte count must fit in int64 (TensorView's element counts) and in uint64 arithmetic.
    if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(nbytes, dim, &nbytes) ||
        nbytes > uint64_t(INT64_MAX)) {
      fail("{}: tensor '{}': shape {} overflows the byte count", source, shown,
           describe_json(shape));
    }
    dims.push_back(int64_t(dim));
  }
  info.shape = Shape(std::span<const int64_t>(dims));

  const Json& offsets = required_field(entry, "data_offsets", source, shown);
  if (!offsets.is_array() || offsets.size() != 2) {
    fail("{}: tensor '{}': 'data_offsets' must be an array [begin, end]", source, shown);
  }
  info.data_begin = unsigned_field(offsets[0], source, shown, "data_offsets begin");
  info.data_end = unsigned_field(offsets[1], source, shown, "data_offsets end");
  if (info.data_begin > info.data_end) {
    fail("{}: tensor '{}': data_offsets begin {} is after end {}", source, shown, info.data_begin,
         info.data_end);
  }
  if (info.nbytes() != nbytes) {
    fail("{}: tensor '{}': {} {} needs {} bytes but data_offsets [{}, {}] span {}", source, shown,
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
      fail("{}: '__metadata__' value of '{}' must be a string, not {}", source,
           printable_excerpt(key), json_type_phrase(text));
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
           printable_excerpt(info.name), info.data_begin, info.data_end, data_size);
    }
  }
  // Names break ties (zero-size tensors share offsets), so the order and the messages do not
  // depend on the order of the header's entries.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : tensors) {
    if (info.data_begin < expected) {
      fail("{}: tensor '{}' at bytes [{}, {}) overlaps tensor '{}' at [{}, {})", source,
           printable_excerpt(info.name), info.data_begin, info.data_end,
           printable_excerpt(previous->name), previous->data_begin, previous->data_end);
    }
    if (info.data_begin > expected) {
      fail("{}: tensor '{}' starts at byte {}, leaving a gap after byte {} of the data section",
           source, printable_excerpt(info.name), info.data_begin, expected);
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
    // The length is not quoted: its 8 bytes are the file's first, and the file may be anything
    // (a symbolic link in a model folder can point anywhere).
    fail(
        "{}: the header length in the first 8 bytes exceeds the {}-byte limit (corrupt or not a "
        "safetensors file)",
        source, kMaxSafetensorsHeaderBytes);
  }
  if (header_size > file_bytes.size() - 8) {
    fail(
        "{}: the header length in the first 8 bytes runs past the end of the {}-byte file "
        "(corrupt or not a safetensors file)",
        source, file_bytes.size());
  }
  const std::string_view text(reinterpret_cast<const char*>(file_bytes.data() + 8),
                              size_t(header_size));
  // Each entry becomes a TensorInfo as soon as it is read, so a header of many tensors never
  // exists whole as nlohmann::json (ten times the size of its text).
  SafetensorsHeader result;
  result.data_offset = 8 + header_size;
  parse_json_object_members_strict(text, source, "header", "tensor name",
                                   [&](const std::string& name, Json&& entry) {
                                     if (name == "__metadata__") {
                                       result.metadata = parse_metadata(entry, source);
                                     } else {
                                       result.tensors.push_back(parse_tensor(name, entry, source));
                                     }
                                   });
  check_layout(result.tensors, file_bytes.size() - result.data_offset, source);
  return result;
}

}  // namespace dsa

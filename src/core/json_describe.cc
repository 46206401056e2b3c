#include "core/json_describe.h"

#include <algorithm>

#include "core/printable.h"

namespace dsa {
namespace {

// Every container writes at least one byte before it descends, and nothing is written once `out`
// reaches `limit`, so the recursion is at most `limit` deep whatever the value's nesting.
template <typename Json>
void append_description(std::string& out, const Json& value, size_t limit) {
  if (out.size() >= limit) return;
  const auto append_string = [&](const std::string& text) {
    out += '"';
    out += printable_excerpt(text, limit > out.size() ? limit - out.size() : 0);
    out += '"';
  };
  if (value.is_string()) {
    append_string(value.template get_ref<const typename Json::string_t&>());
  } else if (value.is_array()) {
    out += '[';
    bool first = true;
    for (const Json& item : value) {
      if (out.size() >= limit) break;
      if (!first) out += ", ";
      first = false;
      append_description(out, item, limit);
    }
    out += ']';
  } else if (value.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = value.begin(); it != value.end() && out.size() < limit; ++it) {
      if (!first) out += ", ";
      first = false;
      append_string(it.key());
      out += ": ";
      append_description(out, it.value(), limit);
    }
    out += '}';
  } else if (value.is_binary() || value.is_discarded()) {
    out += value.is_binary() ? "<binary>" : "<discarded>";
  } else {
    out += value.dump();  // a number, a boolean or null: short, and never recursive
  }
}

template <typename Json>
std::string describe(const Json& value, size_t max_bytes) {
  std::string out;
  append_description(out, value, max_bytes);
  if (out.size() > max_bytes) {
    size_t cut = max_bytes;
    // `out` is valid UTF-8 (printable() made it so): cut before a continuation byte, not in one.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "...";
  }
  return out;
}

}  // namespace

std::string describe_json(const nlohmann::json& value, size_t max_bytes) {
  return describe(value, max_bytes);
}

std::string describe_json(const nlohmann::ordered_json& value, size_t max_bytes) {
  return describe(value, max_bytes);
}

}  // namespace dsa

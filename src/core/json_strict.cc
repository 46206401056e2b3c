#include "core/json_strict.h"

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace dsa {
namespace {

// The keys seen so far in one open object, and the key it is stored under in its parent.
struct OpenObject {
  std::string name;
  std::set<std::string, std::less<>> keys;
};

struct Duplicate {
  std::string key;
  std::string parent;  // empty for the top-level object
  bool top_level = false;
};

// nlohmann's own messages start with "[json.exception.parse_error.101] "; users need the rest.
std::string_view without_exception_id(std::string_view what) {
  const size_t end = what.find("] ");
  return what.starts_with("[json.exception.") && end != std::string_view::npos
             ? what.substr(end + 2)
             : what;
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, std::string_view source,
                                 std::string_view top_level_key_kind) {
  using Json = nlohmann::json;
  std::vector<OpenObject> open;
  std::string last_key;
  std::optional<Duplicate> duplicate;
  // Records the first repeated key; the parse goes on and the error is raised after it, so that
  // no exception crosses nlohmann's parser.
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open.push_back({open.empty() ? std::string() : last_key, {}});
        break;
      case Json::parse_event_t::object_end:
        if (!open.empty()) open.pop_back();
        break;
      case Json::parse_event_t::key:
        last_key = parsed.get<std::string>();
        if (!open.empty() && !open.back().keys.insert(last_key).second && !duplicate) {
          duplicate = Duplicate{last_key, open.back().name, depth == 1};  // 1: the outermost value
        }
        break;
      default:
        break;
    }
    return true;
  };

  // nlohmann stops reading at a NUL byte and would accept "{}\0garbage"; JSON has no place for one.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    fail("{}: invalid JSON: NUL byte at offset {}", source, nul);
  }
  Json result;
  try {
    result = Json::parse(text.begin(), text.end(), on_event);
  } catch (const Json::exception& error) {
    fail("{}: invalid JSON: {}", source, without_exception_id(error.what()));
  }
  if (duplicate && duplicate->top_level) {
    fail("{}: duplicate {} '{}'", source, top_level_key_kind, duplicate->key);
  }
  if (duplicate) {
    fail("{}: duplicate key '{}' in the object '{}'", source, duplicate->key, duplicate->parent);
  }
  return result;
}

std::string_view json_type_phrase(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::binary:
      return "binary data";
    case nlohmann::json::value_t::discarded:
      return "a discarded value";
    case nlohmann::json::value_t::number_float:
      return "a floating-point number";
    default:
      return "an integer";
  }
}

}  // namespace dsa

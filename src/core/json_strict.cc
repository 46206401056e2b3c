#include "core/json_strict.h"

#include <cmath>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/printable.h"

namespace dsa {
namespace {

// A pointer into the text that records how far nlohmann's lexer has read: its SAX events carry
// no position, and errors found in them (a repeated key, too deep a nesting) name a byte offset.
class TrackedCursor {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackedCursor(const char* at, const char** read_up_to) : at_(at), read_up_to_(read_up_to) {}
  reference operator*() const { return *at_; }
  TrackedCursor& operator++() {
    *read_up_to_ = ++at_;
    return *this;
  }
  TrackedCursor operator++(int) {
    TrackedCursor before = *this;
    ++*this;
    return before;
  }
  bool operator==(const TrackedCursor& other) const { return at_ == other.at_; }
  bool operator!=(const TrackedCursor& other) const { return at_ != other.at_; }

 private:
  const char* at_;
  const char** read_up_to_;
};

// nlohmann's messages start with "[json.exception.parse_error.101] "; users need the rest.
std::string_view without_exception_id(std::string_view what) {
  const size_t end = what.find("] ");
  return what.starts_with("[json.exception.") && end != std::string_view::npos
             ? what.substr(end + 2)
             : what;
}

// nlohmann's parse error text, as "<where>: <what>" for "invalid JSON at byte N<where>: <what>":
// its "parse error at line 2, column 7: " becomes ", line 2, column 7". It quotes the whole token
// it stopped in ("last read: '...'"), which may be an unterminated string of megabytes holding any
// bytes: only a printable excerpt of that is kept.
std::pair<std::string, std::string> describe_parse_error(std::string_view what,
                                                         const std::string& last_token) {
  std::string_view message = without_exception_id(what);
  std::string where;
  constexpr std::string_view kAt = "parse error at ";
  if (const size_t colon = message.find(": "); message.starts_with(kAt) && colon != message.npos) {
    where = fmt::format(", {}", message.substr(kAt.size(), colon - kAt.size()));
    message.remove_prefix(colon + 2);
  }
  constexpr std::string_view kMarker = "last read: '";
  const size_t marker = message.find(kMarker);
  const size_t token_at = marker == std::string_view::npos ? 0 : marker + kMarker.size();
  if (marker == std::string_view::npos ||
      message.compare(token_at, last_token.size(), last_token)) {
    return {printable_excerpt(where, 100), printable_excerpt(message, 400)};
  }
  return {printable_excerpt(where, 100),
          printable(message.substr(0, token_at)) + printable_excerpt(last_token, 60) +
              printable_excerpt(message.substr(token_at + last_token.size()), 200)};
}

// Where a container sits in the document, kept for every open one so that an error can name the
// path to it ("weight_map", "model.vocab"). The key lives in the parent, which does not move
// while the child is open.
struct OpenContainer {
  const std::string* key = nullptr;  // null for the top-level value and array items
  size_t index = 0;                  // the item's index when the parent is an array
  bool in_array = false;
};

// Builds the value from nlohmann's SAX events, checking the limits and repeated keys as they
// come. It reports the first problem by returning false, which stops the parse, so no exception
// crosses nlohmann's parser. With a member handler it streams instead: the top level must be an
// object, and each of its members goes to the handler as soon as its value is complete; only the
// keys are kept (to find repeated ones).
template <typename Json>
class StrictBuilder {
 public:
  using MemberHandler = std::function<void(const std::string& key, Json&& value)>;

  using number_integer_t = typename Json::number_integer_t;
  using number_unsigned_t = typename Json::number_unsigned_t;
  using number_float_t = typename Json::number_float_t;
  using string_t = typename Json::string_t;
  using binary_t = typename Json::binary_t;
  using object_t = typename Json::object_t;

  StrictBuilder(std::string_view text, std::string_view source, std::string_view top_level_key_kind)
      : text_(text), read_up_to_(text.data()), source_(source), key_kind_(top_level_key_kind) {}

  // Streams the members of the top-level object to `on_member`; `document` names that object in
  // the error for any other type ("header must be a JSON object, not an array").
  void stream_members(std::string_view document, MemberHandler on_member) {
    document_ = document;
    on_member_ = std::move(on_member);
  }

  TrackedCursor begin() { return {text_.data(), &read_up_to_}; }
  TrackedCursor end() { return {text_.data() + text_.size(), &read_up_to_}; }

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool value) { return add(Json(value)); }
  bool number_integer(number_integer_t value) { return add(Json(value)); }
  bool number_unsigned(number_unsigned_t value) { return add(Json(value)); }
  bool number_float(number_float_t value, const string_t&) {
    // nlohmann refuses overflow itself (error 406); kept so that no inf or nan can slip through.
    if (!std::isfinite(value)) return refuse("invalid JSON: a number out of the range of a double");
    return add(Json(value));
  }
  bool string(string_t& value) {
    if (!check_string(value)) return false;
    return add(Json(std::move(value)));
  }
  bool binary(binary_t&) { return refuse("invalid JSON: a binary value"); }  // text has none

  bool start_object(size_t) { return open(Json(Json::value_t::object)); }
  bool start_array(size_t) { return open(Json(Json::value_t::array)); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(string_t& key) {
    if (!check_string(key)) return false;
    object_t& object = containers_.back()->template get_ref<object_t&>();
    if constexpr (std::is_same_v<object_t, nlohmann::json::object_t>) {
      // A std::map: inserting tells whether the key was there, in O(log n).
      const auto [it, inserted] = object.emplace(std::move(key), nullptr);
      if (!inserted) return refuse_duplicate(it->first);
      slot_ = &it->second;
      slot_key_ = &it->first;
      if (containers_.size() == 1) member_ = {slot_key_, slot_};
    } else {
      // An ordered_map, whose own insert searches linearly: the keys of each open object are kept
      // in a hash set, and new ones appended to the underlying vector directly.
      if (!keys_.back().insert(key).second) return refuse_duplicate(key);
      auto& items = static_cast<typename object_t::Container&>(object);
      items.emplace_back(std::move(key), nullptr);
      slot_ = &items.back().second;
      slot_key_ = &items.back().first;
      if (containers_.size() == 1) member_ = {slot_key_, slot_};
    }
    return true;
  }

  bool parse_error(size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& error) {
    // `position` counts the bytes read, the end of input as one: the last one read is the culprit.
    const auto [where, what] = describe_parse_error(error.what(), last_token);
    error_ = fmt::format("{}: invalid JSON at byte {}{}: {}", source_,
                         std::min(position > 0 ? position - 1 : 0, text_.size()), where, what);
    return false;
  }

  // The parsed value, or the dsa::Error of the first problem.
  Json take_result(bool parsed) {
    if (error_) throw Error(*error_);
    DSA_CHECK(parsed && containers_.empty(), "JSON parse ended without a value or an error");
    return std::move(root_);
  }

 private:
  static std::string_view type_phrase(const Json& value) {
    if constexpr (std::is_same_v<Json, nlohmann::json>) {
      return json_type_phrase(value);
    } else {
      return value.type_name();
    }
  }

  // The offset of the last byte the lexer read: the one that made the problem visible.
  size_t offset() const {
    const size_t read = size_t(read_up_to_ - text_.data());
    return read > 0 ? read - 1 : 0;
  }

  // Records "<source>: <what> at byte N".
  bool refuse(std::string_view what) {
    error_ = fmt::format("{}: {} at byte {}", source_, what, offset());
    return false;
  }

  bool refuse_duplicate(const std::string& key) {
    const std::string shown = printable_excerpt(key);
    if (containers_.size() == 1) {
      error_ = fmt::format("{}: duplicate {} '{}' at byte {}", source_, key_kind_, shown, offset());
    } else {
      error_ = fmt::format("{}: duplicate key '{}' in the object '{}' at byte {}", source_, shown,
                           path_to(opened_.size() - 1), offset());
    }
    return false;
  }

  // The path of open container `level` ("weight_map", "a.b[3]"), built only for an error.
  std::string path_to(size_t level) const {
    std::string path;
    for (size_t i = 1; i <= level; ++i) {  // 0 is the top-level value, which has no name
      const OpenContainer& c = opened_[i];
      if (c.in_array) {
        path += fmt::format("[{}]", c.index);
      } else {
        if (!path.empty()) path += '.';
        path += printable_excerpt(*c.key, 60);
      }
    }
    return path;
  }

  bool check_string(const string_t& text) {
    if (text.size() <= kMaxJsonStringBytes) return true;
    return refuse(fmt::format("JSON string of {} bytes, over the limit of {} bytes", text.size(),
                              kMaxJsonStringBytes));
  }

  bool count_value() {
    if (++values_ <= kMaxJsonValues) return true;
    return refuse(fmt::format("JSON document of more than {} values, the limit", kMaxJsonValues));
  }

  // Stores `value` where the next value goes; returns it, or null after an error.
  Json* place(Json&& value) {
    if (!count_value()) return nullptr;
    if (containers_.empty()) {
      if (on_member_ && !value.is_object()) {
        refuse(fmt::format("{} must be a JSON object, not {}", document_, type_phrase(value)));
        return nullptr;
      }
      root_ = std::move(value);
      return &root_;
    }
    Json& parent = *containers_.back();
    if (parent.is_array()) {
      auto& items = parent.template get_ref<typename Json::array_t&>();
      items.push_back(std::move(value));
      return &items.back();
    }
    *slot_ = std::move(value);
    return slot_;
  }

  bool add(Json&& value) {
    Json* placed = place(std::move(value));
    if (!placed) return false;
    return containers_.size() == 1 ? hand_over_member() : true;
  }

  // In streaming mode, passes the member just completed to the handler and drops its value.
  bool hand_over_member() {
    if (!on_member_ || !containers_.back()->is_object()) return true;
    try {
      on_member_(*member_.first, std::move(*member_.second));
    } catch (const Error& e) {
      error_ = e.what();
      return false;
    }
    *member_.second = nullptr;
    return true;
  }

  bool open(Json&& container) {
    if (containers_.size() >= size_t(kMaxJsonDepth)) {
      return refuse(fmt::format("JSON nested deeper than {} levels", kMaxJsonDepth));
    }
    OpenContainer where;
    if (!containers_.empty() && containers_.back()->is_array()) {
      where.in_array = true;
      where.index = containers_.back()->size();
    } else if (!containers_.empty()) {
      where.key = slot_key_;
    }
    const bool is_object = container.is_object();
    Json* placed = place(std::move(container));
    if (!placed) return false;
    containers_.push_back(placed);
    opened_.push_back(where);
    if constexpr (!std::is_same_v<object_t, nlohmann::json::object_t>) {
      if (is_object) keys_.emplace_back();
    }
    return true;
  }

  bool close() {
    if constexpr (!std::is_same_v<object_t, nlohmann::json::object_t>) {
      if (containers_.back()->is_object()) keys_.pop_back();
    }
    containers_.pop_back();
    opened_.pop_back();
    return containers_.size() == 1 ? hand_over_member() : true;
  }

  std::string_view text_;
  const char* read_up_to_;
  std::string_view source_;
  std::string_view key_kind_;
  Json root_;
  std::vector<Json*> containers_;  // the open arrays and objects, outermost first
  std::vector<OpenContainer> opened_;
  std::vector<std::unordered_set<std::string>> keys_;  // per open object (ordered_json only)
  Json* slot_ = nullptr;                               // where the value after a key goes
  const std::string* slot_key_ = nullptr;              // that key
  std::pair<const std::string*, Json*> member_;        // the top-level member being read
  std::string_view document_;
  MemberHandler on_member_;  // set in streaming mode
  size_t values_ = 0;
  std::optional<std::string> error_;
};

// nlohmann stops reading at a NUL byte and would accept "{}\0garbage"; JSON has no place for one.
void refuse_nul_bytes(std::string_view text, std::string_view source) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    fail("{}: invalid JSON: NUL byte at offset {}", source, nul);
  }
}

template <typename Json>
Json run(StrictBuilder<Json>& builder) {
  const bool parsed = Json::sax_parse(builder.begin(), builder.end(), &builder,
                                      nlohmann::json::input_format_t::json, /*strict=*/true);
  return builder.take_result(parsed);
}

template <typename Json>
Json parse_strict(std::string_view text, std::string_view source,
                  std::string_view top_level_key_kind) {
  refuse_nul_bytes(text, source);
  StrictBuilder<Json> builder(text, source, top_level_key_kind);
  return run(builder);
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, std::string_view source,
                                 std::string_view top_level_key_kind) {
  return parse_strict<nlohmann::json>(text, source, top_level_key_kind);
}

nlohmann::ordered_json parse_ordered_json_strict(std::string_view text, std::string_view source,
                                                 std::string_view top_level_key_kind) {
  return parse_strict<nlohmann::ordered_json>(text, source, top_level_key_kind);
}

void parse_json_object_members_strict(
    std::string_view text, std::string_view source, std::string_view document,
    std::string_view key_kind,
    const std::function<void(const std::string& key, nlohmann::json&& value)>& on_member) {
  refuse_nul_bytes(text, source);
  StrictBuilder<nlohmann::json> builder(text, source, key_kind);
  builder.stream_members(document, on_member);
  run(builder);
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

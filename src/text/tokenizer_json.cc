// Parsing of Hugging Face tokenizer.json files into a TokenizerModel. Only what byte-level BPE
// tokenizers (DeepSeek-V3's and those `dsa tokenizer train` writes) use is accepted; anything
// else is rejected with the field's path rather than silently giving different ids. The text goes
// through parse_json_strict (no repeated keys, no trailing text, bounded nesting), and ids are
// bounded before any table is sized by them (docs/input-limits.md).
#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_describe.h"
#include "core/json_strict.h"
#include "core/printable.h"
#include "text/bpe_byte_alphabet.h"
#include "text/tokenizer_model.h"

namespace dsa::text {
namespace {

using nlohmann::json;

// The strings DeepSeek uses for BOS and EOS, used when no tokenizer_config.json says otherwise.
constexpr std::string_view kDeepSeekBos = "<｜begin▁of▁sentence｜>";
constexpr std::string_view kDeepSeekEos = "<｜end▁of▁sentence｜>";

// GPT-2's split regex, which a ByteLevel pre-tokenizer with use_regex=true applies.
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Upper bounds on the ids a tokenizer.json may use. The id tables are sized by the largest id, so
// an id is checked before anything is allocated for it: it must be below the number of tokens the
// file lists plus kMaxTokenIdGap (real files leave small gaps, such as ids kept free between the
// vocabulary and the added tokens), and below kMaxTokenizerIds overall.
constexpr int64_t kMaxTokenIdGap = int64_t(1) << 16;
constexpr int64_t kMaxTokenizerIds = int64_t(1) << 22;  // as config.json's vocab_size limit

// Where a field sits ("pre_tokenizer.pretokenizers[3].pattern"): a chain of links that live on
// the stack of the code reading the field, turned into text only when an error names it, so a
// deep Sequence costs nothing for its path until then.
class Path {
 public:
  Path() = default;  // the top level of the document
  Path field(std::string_view name) const { return Path(this, Kind::kField, name, 0); }
  Path item(size_t index) const { return Path(this, Kind::kItem, {}, index); }
  Path key(std::string_view text) const { return Path(this, Kind::kKey, text, 0); }

  std::string str() const {
    std::vector<const Path*> links;
    for (const Path* at = this; at->parent_; at = at->parent_) links.push_back(at);
    if (links.empty()) return "top level";
    std::string out;
    for (auto it = links.rbegin(); it != links.rend(); ++it) {
      const Path& link = **it;
      if (link.kind_ == Kind::kItem) {
        out += fmt::format("[{}]", link.index_);
      } else if (link.kind_ == Kind::kKey) {
        out += fmt::format("[\"{}\"]", printable_excerpt(link.name_, 60));
      } else {
        if (!out.empty()) out += '.';
        out += link.name_;
      }
    }
    return out;
  }

 private:
  enum class Kind { kField, kItem, kKey };
  Path(const Path* parent, Kind kind, std::string_view name, size_t index)
      : parent_(parent), kind_(kind), name_(name), index_(index) {}

  const Path* parent_ = nullptr;
  Kind kind_ = Kind::kField;
  std::string_view name_;
  size_t index_ = 0;
};

// `text` as a regex that matches exactly it: every ASCII character that is not a letter or a digit
// gets a backslash, which in PCRE2 always makes it literal. \Q...\E would end early at a "\E" in
// the text, and translate_hf_regex would still rewrite a `\s` inside it.
std::string literal_regex(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x80 && !std::isalnum(byte)) out += '\\';
    out += c;
  }
  return out;
}

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  [[noreturn]] void error(const Path& where, std::string_view what) const {
    fail("{}: {}: {}", source_, where.str(), what);
  }
  const json& field(const json& object, const Path& where, const char* key) const {
    if (!object.is_object())
      error(where, fmt::format("expected an object, got {}", object.type_name()));
    const auto it = object.find(key);
    if (it == object.end()) error(where, fmt::format("missing field \"{}\"", key));
    return *it;
  }
  std::string string_field(const json& object, const Path& where, const char* key) const {
    const json& value = field(object, where, key);
    if (!value.is_string())
      error(where.field(key), fmt::format("expected a string, got {}", value.type_name()));
    return value.get<std::string>();
  }
  bool bool_field(const json& object, const Path& where, const char* key, bool fallback) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_boolean())
      error(where.field(key), fmt::format("expected true or false, got {}", it->type_name()));
    return it->get<bool>();
  }

  // Sets the bound on ids from the number of tokens the file lists (see kMaxTokenIdGap).
  void limit_ids(size_t listed_tokens) {
    listed_tokens_ = listed_tokens;
    id_limit_ = std::min<int64_t>(int64_t(listed_tokens) + kMaxTokenIdGap, kMaxTokenizerIds);
  }
  int32_t id_value(const json& value, const Path& where) const {
    bool in_range = false;
    if (value.is_number_unsigned()) {
      in_range = value.get<uint64_t>() < uint64_t(id_limit_);
    } else if (value.is_number_integer()) {
      in_range = value.get<int64_t>() >= 0 && value.get<int64_t>() < id_limit_;
    }
    if (!in_range) {
      error(where, fmt::format("expected a token id in [0, {}) (the {} tokens listed plus up to {} "
                               "unused ids, at most {}), got {}",
                               id_limit_, listed_tokens_, kMaxTokenIdGap, kMaxTokenizerIds,
                               describe_json(value)));
    }
    return value.get<int32_t>();
  }

  // Recursion is bounded: each Sequence level is two levels of JSON, which parse_json_strict
  // limits to kMaxJsonDepth.
  void parse_normalizer(const json& normalizer, const Path& where) const {
    if (normalizer.is_null()) return;
    const std::string type = string_field(normalizer, where, "type");
    if (type == "Sequence") {
      const json& list = field(normalizer, where, "normalizers");
      const Path list_at = where.field("normalizers");
      if (!list.is_array()) error(list_at, "expected an array");
      for (size_t i = 0; i < list.size(); ++i) parse_normalizer(list[i], list_at.item(i));
      return;
    }
    error(where,
          fmt::format("normalizer type \"{}\" is not supported (only none or an empty Sequence)",
                      printable_excerpt(type)));
  }

  // Collects the regexes of Split steps; returns whether a ByteLevel step was seen.
  bool parse_pre_tokenizer(const json& pre, const Path& where,
                           std::vector<std::string>& patterns) const {
    const std::string type = string_field(pre, where, "type");
    if (type == "Sequence") {
      const json& list = field(pre, where, "pretokenizers");
      const Path list_at = where.field("pretokenizers");
      if (!list.is_array()) error(list_at, "expected an array");
      bool byte_level = false;
      for (size_t i = 0; i < list.size(); ++i) {
        byte_level |= parse_pre_tokenizer(list[i], list_at.item(i), patterns);
      }
      return byte_level;
    }
    if (type == "Split") {
      const std::string behavior = string_field(pre, where, "behavior");
      if (behavior != "Isolated")
        error(where.field("behavior"), fmt::format("\"{}\" is not supported (only \"Isolated\")",
                                                   printable_excerpt(behavior)));
      if (bool_field(pre, where, "invert", false))
        error(where.field("invert"), "true is not supported");
      const json& pattern = field(pre, where, "pattern");
      const Path pattern_at = where.field("pattern");
      if (pattern.is_object() && pattern.contains("Regex")) {
        patterns.push_back(string_field(pattern, pattern_at, "Regex"));
      } else if (pattern.is_object() && pattern.contains("String")) {
        patterns.push_back(literal_regex(string_field(pattern, pattern_at, "String")));
      } else {
        error(pattern_at, "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      return false;
    }
    if (type == "ByteLevel") {
      if (bool_field(pre, where, "add_prefix_space", false))
        error(where.field("add_prefix_space"), "true is not supported");
      if (bool_field(pre, where, "use_regex", true)) patterns.emplace_back(kGpt2Pattern);
      return true;
    }
    error(where,
          fmt::format("pre-tokenizer type \"{}\" is not supported (Sequence, Split, ByteLevel)",
                      printable_excerpt(type)));
  }

 private:
  std::string source_;
  size_t listed_tokens_ = 0;
  int64_t id_limit_ = 0;
};

// Only called with ids that passed Parser::id_value, so the tables stay within kMaxTokenizerIds.
void set_token(TokenizerModel& model, int32_t id, const std::string& text) {
  if (static_cast<size_t>(id) >= model.id_to_text.size()) {
    model.id_to_text.resize(id + 1);
    model.id_used.resize(id + 1, 0);
    model.id_special.resize(id + 1, 0);
  }
  model.id_to_text[id] = text;
  model.id_used[id] = 1;
}

// The id of a token named by tokenizer_config.json's bos_token/eos_token (a string, or an
// object with "content"), or of the DeepSeek default string.
std::optional<int32_t> special_id(const TokenizerModel& model, const json* config, const char* key,
                                  std::string_view fallback) {
  std::string name(fallback);
  if (config && config->is_object() && config->contains(key)) {
    const json& value = (*config)[key];
    if (value.is_string()) name = value.get<std::string>();
    if (value.is_object() && value.contains("content") && value["content"].is_string()) {
      name = value["content"].get<std::string>();
    }
  }
  const auto it = model.text_to_id.find(name);
  return it == model.text_to_id.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

// The number of entries of root.model.vocab and root.added_tokens, whatever their types (a wrong
// type is reported where the field is read).
size_t listed_token_count(const json& root) {
  size_t count = 0;
  if (root.is_object()) {
    if (const auto added = root.find("added_tokens"); added != root.end() && added->is_array())
      count += added->size();
    if (const auto bpe = root.find("model"); bpe != root.end() && bpe->is_object()) {
      if (const auto vocab = bpe->find("vocab"); vocab != bpe->end() && vocab->is_object())
        count += vocab->size();
    }
  }
  return count;
}

}  // namespace

TokenizerModel parse_tokenizer_json(std::string_view json_text, std::string_view source,
                                    std::optional<std::string_view> config_json) {
  Parser p(source);
  const json root = parse_json_strict(json_text, source);
  p.limit_ids(listed_token_count(root));
  TokenizerModel model;

  const Path top;
  const Path model_at = top.field("model");
  const json& bpe = p.field(root, top, "model");
  if (const std::string type = p.string_field(bpe, model_at, "type"); type != "BPE") {
    p.error(model_at.field("type"),
            fmt::format("\"{}\" is not supported (only \"BPE\")", printable_excerpt(type)));
  }
  if (const auto it = bpe.find("dropout"); it != bpe.end() && !it->is_null() && *it != 0.0) {
    p.error(model_at.field("dropout"), "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const auto it = bpe.find(key); it != bpe.end() && !it->is_null() && *it != "") {
      p.error(model_at.field(key), "is not supported for byte-level BPE");
    }
  }
  if (p.bool_field(bpe, model_at, "byte_fallback", false))
    p.error(model_at.field("byte_fallback"), "true is not supported");
  model.ignore_merges = p.bool_field(bpe, model_at, "ignore_merges", false);

  const json& vocab = p.field(bpe, model_at, "vocab");
  const Path vocab_at = model_at.field("vocab");
  if (!vocab.is_object()) p.error(vocab_at, "expected an object of token -> id");
  for (const auto& [text, id_json] : vocab.items()) {
    const int32_t id = p.id_value(id_json, vocab_at.key(text));
    set_token(model, id, text);
    model.text_to_id[text] = id;
  }

  const json& merges_json = p.field(bpe, model_at, "merges");
  const Path merges_at = model_at.field("merges");
  if (!merges_json.is_array()) p.error(merges_at, "expected an array");
  std::vector<BpeMerge> merges;
  merges.reserve(merges_json.size());
  for (size_t i = 0; i < merges_json.size(); ++i) {
    const json& m = merges_json[i];
    const Path where = merges_at.item(i);
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        p.error(where, fmt::format("expected \"left right\" with one space, got \"{}\"",
                                   printable_excerpt(s)));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      p.error(where,
              fmt::format("expected \"left right\" or [left, right], got {}", describe_json(m)));
    }
    const auto lookup = [&](const std::string& text) {
      const auto it = model.text_to_id.find(text);
      if (it == model.text_to_id.end())
        p.error(where, fmt::format("token \"{}\" is not in model.vocab", printable_excerpt(text)));
      return it->second;
    };
    merges.push_back({lookup(left), lookup(right), lookup(left + right)});
  }

  const ByteAlphabet& alphabet = byte_alphabet();
  std::array<int32_t, 256> byte_ids{};
  for (int b = 0; b < 256; ++b) {
    const auto it = model.text_to_id.find(alphabet.spelling(static_cast<uint8_t>(b)));
    byte_ids[b] = it == model.text_to_id.end() ? -1 : it->second;
  }
  model.bpe = BpeModel(byte_ids, merges);

  if (const auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    const Path added_at = top.field("added_tokens");
    if (!it->is_array()) p.error(added_at, "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& token = (*it)[i];
      const Path where = added_at.item(i);
      const int32_t id = p.id_value(p.field(token, where, "id"), where.field("id"));
      const std::string content = p.string_field(token, where, "content");
      if (content.empty()) p.error(where.field("content"), "must not be empty");
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        if (p.bool_field(token, where, flag, false))
          p.error(where.field(flag), "true is not supported");
      }
      const bool special = p.bool_field(token, where, "special", false);
      set_token(model, id, content);
      model.id_special[id] = special ? 1 : 0;
      model.text_to_id[content] = id;
      model.added_tokens.add(content, id, special);
    }
  }

  if (const auto it = root.find("normalizer"); it != root.end())
    p.parse_normalizer(*it, top.field("normalizer"));
  std::vector<std::string> patterns;
  const Path pre_at = top.field("pre_tokenizer");
  const auto pre = root.find("pre_tokenizer");
  if (pre == root.end() || pre->is_null() || !p.parse_pre_tokenizer(*pre, pre_at, patterns)) {
    p.error(pre_at, "no ByteLevel step: only byte-level BPE tokenizers are supported");
  }
  try {
    model.pre_tokenizer = PreTokenizer(patterns);
  } catch (const Error& e) {
    p.error(pre_at, e.what());
  }
  if (const auto it = root.find("decoder"); it != root.end() && !it->is_null()) {
    const Path decoder_at = top.field("decoder");
    if (const std::string type = p.string_field(*it, decoder_at, "type"); type != "ByteLevel") {
      p.error(decoder_at.field("type"),
              fmt::format("\"{}\" is not supported (only \"ByteLevel\")", printable_excerpt(type)));
    }
  }

  // HF's ByteLevel decoder: a token spelled entirely in the byte alphabet stands for those bytes;
  // any other token (an added token such as "<｜User｜>") stands for its own UTF-8 text.
  model.id_to_bytes.resize(model.id_to_text.size());
  for (size_t id = 0; id < model.id_to_text.size(); ++id) {
    auto bytes = alphabet.unspell(model.id_to_text[id]);
    model.id_to_bytes[id] = bytes ? std::move(*bytes) : model.id_to_text[id];
  }

  json config;
  if (config_json) config = parse_json_strict(*config_json, "tokenizer_config.json");
  model.bos_id = special_id(model, config_json ? &config : nullptr, "bos_token", kDeepSeekBos);
  model.eos_id = special_id(model, config_json ? &config : nullptr, "eos_token", kDeepSeekEos);
  return model;
}

}  // namespace dsa::text

// Parsing of Hugging Face tokenizer.json files into a TokenizerModel. Only what byte-level BPE
// tokenizers (DeepSeek-V3's and those `dsa tokenizer train` writes) use is accepted; anything
// else is rejected with the field's path rather than silently giving different ids.
#include <nlohmann/json.hpp>

#include "core/error.h"
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

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  [[noreturn]] void error(std::string_view where, std::string_view what) const {
    fail("{}: {}: {}", source_, where, what);
  }
  const json& field(const json& object, std::string_view where, const char* key) const {
    if (!object.is_object())
      error(where, fmt::format("expected an object, got {}", object.type_name()));
    const auto it = object.find(key);
    if (it == object.end()) error(where, fmt::format("missing field \"{}\"", key));
    return *it;
  }
  std::string string_field(const json& object, std::string_view where, const char* key) const {
    const json& value = field(object, where, key);
    if (!value.is_string())
      error(fmt::format("{}.{}", where, key),
            fmt::format("expected a string, got {}", value.type_name()));
    return value.get<std::string>();
  }
  bool bool_field(const json& object, std::string_view where, const char* key,
                  bool fallback) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_boolean())
      error(fmt::format("{}.{}", where, key),
            fmt::format("expected true or false, got {}", it->type_name()));
    return it->get<bool>();
  }
  int32_t id_value(const json& value, std::string_view where) const {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= (1 << 30)) {
      error(where, fmt::format("expected a token id in [0, 2^30), got {}", value.dump()));
    }
    return value.get<int32_t>();
  }

  void parse_normalizer(const json& normalizer, std::string_view where) const {
    if (normalizer.is_null()) return;
    const std::string type = string_field(normalizer, where, "type");
    if (type == "Sequence") {
      const json& list = field(normalizer, where, "normalizers");
      if (!list.is_array()) error(fmt::format("{}.normalizers", where), "expected an array");
      for (size_t i = 0; i < list.size(); ++i)
        parse_normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i));
      return;
    }
    error(where,
          fmt::format("normalizer type \"{}\" is not supported (only none or an empty Sequence)",
                      type));
  }

  // Collects the regexes of Split steps; returns whether a ByteLevel step was seen.
  bool parse_pre_tokenizer(const json& pre, std::string_view where,
                           std::vector<std::string>& patterns) const {
    const std::string type = string_field(pre, where, "type");
    if (type == "Sequence") {
      const json& list = field(pre, where, "pretokenizers");
      if (!list.is_array()) error(fmt::format("{}.pretokenizers", where), "expected an array");
      bool byte_level = false;
      for (size_t i = 0; i < list.size(); ++i) {
        byte_level |=
            parse_pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", where, i), patterns);
      }
      return byte_level;
    }
    if (type == "Split") {
      const std::string behavior = string_field(pre, where, "behavior");
      if (behavior != "Isolated")
        error(fmt::format("{}.behavior", where),
              fmt::format("\"{}\" is not supported (only \"Isolated\")", behavior));
      if (bool_field(pre, where, "invert", false))
        error(fmt::format("{}.invert", where), "true is not supported");
      const json& pattern = field(pre, where, "pattern");
      const std::string pattern_where = fmt::format("{}.pattern", where);
      if (pattern.is_object() && pattern.contains("Regex")) {
        patterns.push_back(string_field(pattern, pattern_where, "Regex"));
      } else if (pattern.is_object() && pattern.contains("String")) {
        patterns.push_back("\\Q" + string_field(pattern, pattern_where, "String") + "\\E");
      } else {
        error(pattern_where, "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      return false;
    }
    if (type == "ByteLevel") {
      if (bool_field(pre, where, "add_prefix_space", false))
        error(fmt::format("{}.add_prefix_space", where), "true is not supported");
      if (bool_field(pre, where, "use_regex", true)) patterns.emplace_back(kGpt2Pattern);
      return true;
    }
    error(where,
          fmt::format("pre-tokenizer type \"{}\" is not supported (Sequence, Split, ByteLevel)",
                      type));
  }

 private:
  std::string source_;
};

json parse_json(std::string_view text, std::string_view source) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON (byte {}): {}", source, e.byte, e.what());
  }
}

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

}  // namespace

TokenizerModel parse_tokenizer_json(std::string_view json_text, std::string_view source,
                                    std::optional<std::string_view> config_json) {
  const Parser p(source);
  const json root = parse_json(json_text, source);
  TokenizerModel model;

  const json& bpe = p.field(root, "top level", "model");
  if (const std::string type = p.string_field(bpe, "model", "type"); type != "BPE") {
    p.error("model.type", fmt::format("\"{}\" is not supported (only \"BPE\")", type));
  }
  if (const auto it = bpe.find("dropout"); it != bpe.end() && !it->is_null() && *it != 0.0) {
    p.error("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const auto it = bpe.find(key); it != bpe.end() && !it->is_null() && *it != "") {
      p.error(fmt::format("model.{}", key), "is not supported for byte-level BPE");
    }
  }
  if (p.bool_field(bpe, "model", "byte_fallback", false))
    p.error("model.byte_fallback", "true is not supported");
  model.ignore_merges = p.bool_field(bpe, "model", "ignore_merges", false);

  const json& vocab = p.field(bpe, "model", "vocab");
  if (!vocab.is_object()) p.error("model.vocab", "expected an object of token -> id");
  for (const auto& [text, id_json] : vocab.items()) {
    const int32_t id = p.id_value(id_json, fmt::format("model.vocab[\"{}\"]", text));
    set_token(model, id, text);
    model.text_to_id[text] = id;
  }

  const json& merges_json = p.field(bpe, "model", "merges");
  if (!merges_json.is_array()) p.error("model.merges", "expected an array");
  std::vector<BpeMerge> merges;
  merges.reserve(merges_json.size());
  for (size_t i = 0; i < merges_json.size(); ++i) {
    const json& m = merges_json[i];
    const std::string where = fmt::format("model.merges[{}]", i);
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        p.error(where, fmt::format("expected \"left right\" with one space, got \"{}\"", s));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      p.error(where, fmt::format("expected \"left right\" or [left, right], got {}", m.dump()));
    }
    const auto lookup = [&](const std::string& text) {
      const auto it = model.text_to_id.find(text);
      if (it == model.text_to_id.end())
        p.error(where, fmt::format("token \"{}\" is not in model.vocab", text));
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
    if (!it->is_array()) p.error("added_tokens", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& token = (*it)[i];
      const std::string where = fmt::format("added_tokens[{}]", i);
      const int32_t id = p.id_value(p.field(token, where, "id"), where + ".id");
      const std::string content = p.string_field(token, where, "content");
      if (content.empty()) p.error(where + ".content", "must not be empty");
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        if (p.bool_field(token, where, flag, false))
          p.error(fmt::format("{}.{}", where, flag), "true is not supported");
      }
      const bool special = p.bool_field(token, where, "special", false);
      set_token(model, id, content);
      model.id_special[id] = special ? 1 : 0;
      model.text_to_id[content] = id;
      model.added_tokens.add(content, id, special);
    }
  }

  if (const auto it = root.find("normalizer"); it != root.end())
    p.parse_normalizer(*it, "normalizer");
  std::vector<std::string> patterns;
  const auto pre = root.find("pre_tokenizer");
  if (pre == root.end() || pre->is_null() ||
      !p.parse_pre_tokenizer(*pre, "pre_tokenizer", patterns)) {
    p.error("pre_tokenizer", "no ByteLevel step: only byte-level BPE tokenizers are supported");
  }
  try {
    model.pre_tokenizer = PreTokenizer(patterns);
  } catch (const Error& e) {
    p.error("pre_tokenizer", e.what());
  }
  if (const auto it = root.find("decoder"); it != root.end() && !it->is_null()) {
    if (const std::string type = p.string_field(*it, "decoder", "type"); type != "ByteLevel") {
      p.error("decoder.type", fmt::format("\"{}\" is not supported (only \"ByteLevel\")", type));
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
  if (config_json) config = parse_json(*config_json, "tokenizer_config.json");
  model.bos_id = special_id(model, config_json ? &config : nullptr, "bos_token", kDeepSeekBos);
  model.eos_id = special_id(model, config_json ? &config : nullptr, "eos_token", kDeepSeekEos);
  return model;
}

}  // namespace dsa::text

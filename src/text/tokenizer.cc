#include "text/tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/file_read.h"
#include "core/printable.h"
#include "text/bpe_byte_alphabet.h"
#include "text/tokenizer_model.h"
#include "text/utf8.h"

namespace dsa::text {
namespace {

// Non-blocking open, regular files only, at most kMaxTextFileBytes (core/file_read.h).
std::string read_file(const std::filesystem::path& path) {
  return read_regular_file(path, "tokenizer file");
}

// Words up to this many bytes are cached within one encode call: long words are rare and would
// bloat the cache.
constexpr size_t kMaxCachedWordBytes = 64;

// Encodes the text between two added tokens: pre-tokenize, then BPE per word.
class SegmentEncoder {
 public:
  SegmentEncoder(const TokenizerModel& model, std::vector<int32_t>& out)
      : model_(model), out_(out) {}

  void encode(std::string_view segment) {
    model_.pre_tokenizer.split(segment, spans_);
    for (const TextSpan span : spans_)
      encode_word(segment.substr(span.begin, span.end - span.begin));
  }

 private:
  void encode_word(std::string_view word) {
    if (model_.ignore_merges) {
      const auto it = model_.text_to_id.find(byte_alphabet().spell(word));
      if (it != model_.text_to_id.end()) {
        out_.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() <= kMaxCachedWordBytes;
    if (cacheable) {
      const auto it = cache_.find(word);
      if (it != cache_.end()) {
        out_.insert(out_.end(), cached_ids_.begin() + it->second.first,
                    cached_ids_.begin() + it->second.first + it->second.second);
        return;
      }
    }
    const size_t start = out_.size();
    model_.bpe.encode_word(word, out_);
    if (cacheable) {
      cache_.emplace(word, std::make_pair(cached_ids_.size(), out_.size() - start));
      cached_ids_.insert(cached_ids_.end(), out_.begin() + static_cast<std::ptrdiff_t>(start),
                         out_.end());
    }
  }

  const TokenizerModel& model_;
  std::vector<int32_t>& out_;
  std::vector<TextSpan> spans_;
  // word (a view into the text being encoded) -> (offset, count) in cached_ids_
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> cache_;
  std::vector<int32_t> cached_ids_;
};

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerModel> model) : model_(std::move(model)) {}

Tokenizer Tokenizer::from_json_text(std::string_view json_text, std::string_view source) {
  return Tokenizer(std::make_shared<const TokenizerModel>(parse_tokenizer_json(json_text, source)));
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  const std::string text = read_file(tokenizer_json);
  // tokenizer_config.json beside the file names the BOS and EOS tokens when present.
  const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  std::optional<std::string> config;
  if (std::filesystem::is_regular_file(config_path)) config = read_file(config_path);
  return Tokenizer(std::make_shared<const TokenizerModel>(
      parse_tokenizer_json(text, tokenizer_json.string(), config)));
}

Tokenizer Tokenizer::from_model_dir(const std::filesystem::path& dir) {
  const auto path = dir / "tokenizer.json";
  // Only a missing file is "no tokenizer.json"; a FIFO, a folder or a device of that name is
  // refused by from_file's read (RegularFile), which says what it is.
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    fail("model directory {} has no tokenizer.json", printable(dir.string()));
  }
  return from_file(path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool allow_special) const {
  std::string repaired;
  std::string_view text = input;
  if (!is_valid_utf8(input)) {
    repaired = sanitize_utf8(input);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  SegmentEncoder segments(*model_, ids);
  size_t pos = 0;
  while (pos < text.size()) {
    const auto match = model_->added_tokens.find(text, pos, allow_special);
    const size_t segment_end = match ? match->begin : text.size();
    if (segment_end > pos) segments.encode(text.substr(pos, segment_end - pos));
    if (!match) break;
    ids.push_back(match->id);
    pos = match->end;
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (skip_special && is_special(id)) continue;  // also validates the id
    if (!skip_special) token_text(id);
    bytes += model_->id_to_bytes[id];
  }
  return is_valid_utf8(bytes) ? bytes : sanitize_utf8(bytes);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  token_text(id);  // validates the id
  return model_->id_to_bytes[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  const auto it = model_->text_to_id.find(std::string(token));
  if (it == model_->text_to_id.end()) return std::nullopt;
  return it->second;
}

std::string_view Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !model_->id_used[id]) {
    fail("token id {} is not in the vocabulary (ids 0..{})", id, vocab_size() - 1);
  }
  return model_->id_to_text[id];
}

bool Tokenizer::is_special(int32_t id) const {
  token_text(id);
  return model_->id_special[id] != 0;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(model_->id_to_text.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return model_->bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return model_->eos_id; }

}  // namespace dsa::text

#include "text/bpe_trainer.h"

#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "text/bpe_byte_alphabet.h"
#include "text/utf8.h"

namespace dsa::text {
namespace {

constexpr ChatTokenSpec kChatTokens[] = {
    {"<｜begin▁of▁sentence｜>", true},
    {"<｜end▁of▁sentence｜>", true},
    {"<｜▁pad▁｜>", true},
    {"<｜User｜>", false},
    {"<｜Assistant｜>", false},
    {"<think>", false},
    {"</think>", false},
    {"｜DSML｜", false},
};
constexpr int32_t kChatTokenCount = static_cast<int32_t>(std::size(kChatTokens));

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

struct Candidate {
  int64_t count;
  uint64_t pair;
  // Max-heap order: the higher count first, then the smaller pair.
  bool operator<(const Candidate& other) const {
    return count != other.count ? count < other.count : pair > other.pair;
  }
};

// The learned vocabulary: raw bytes per id (ids below kChatTokenCount are the chat tokens) and
// the merges in rank order.
struct Learned {
  std::vector<std::string> token_bytes;
  std::vector<std::pair<int32_t, int32_t>> merges;
};

class MergeLearner {
 public:
  MergeLearner(const std::map<std::string, int64_t>& word_counts, Learned& learned)
      : learned_(learned) {
    for (const auto& [word, count] : word_counts) {
      Word w{{}, count};
      for (const char c : word) w.symbols.push_back(kChatTokenCount + static_cast<uint8_t>(c));
      words_.push_back(std::move(w));
    }
    for (int32_t index = 0; index < static_cast<int32_t>(words_.size()); ++index) {
      add_pairs(index, +1);
    }
    for (const auto& [pair, count] : pair_counts_) heap_.push({count, pair});
    changed_.clear();
  }

  void run(int32_t vocab_size, int64_t min_frequency) {
    std::unordered_map<std::string, int32_t> ids;
    for (size_t id = 0; id < learned_.token_bytes.size(); ++id)
      ids[learned_.token_bytes[id]] = static_cast<int32_t>(id);
    while (static_cast<int32_t>(learned_.token_bytes.size()) < vocab_size && !heap_.empty()) {
      const Candidate top = heap_.top();
      heap_.pop();
      const auto it = pair_counts_.find(top.pair);
      const int64_t current = it == pair_counts_.end() ? 0 : it->second;
      if (current != top.count) {  // stale: counts changed since it was queued
        if (current > 0) heap_.push({current, top.pair});
        continue;
      }
      if (current < min_frequency) break;
      const auto left = static_cast<int32_t>(top.pair >> 32);
      const auto right = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
      const std::string merged = learned_.token_bytes[left] + learned_.token_bytes[right];
      // Two different pairs can spell the same bytes; the second reuses the first's id.
      const auto [id_it, added] =
          ids.try_emplace(merged, static_cast<int32_t>(learned_.token_bytes.size()));
      if (added) learned_.token_bytes.push_back(merged);
      learned_.merges.emplace_back(left, right);
      apply_merge(top.pair, left, right, id_it->second);
    }
  }

 private:
  // Adds (sign +1) or removes (-1) the pairs of one word, weighted by its count.
  void add_pairs(int32_t index, int sign) {
    const Word& w = words_[index];
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      const uint64_t pair = pair_key(w.symbols[i], w.symbols[i + 1]);
      pair_counts_[pair] += sign * w.count;
      if (sign > 0) {
        pair_words_[pair].push_back(index);
        changed_.push_back(pair);
      }
    }
  }

  void apply_merge(uint64_t pair, int32_t left, int32_t right, int32_t merged) {
    std::vector<int32_t> touched = std::move(pair_words_[pair]);
    pair_words_.erase(pair);
    changed_.clear();
    ++stamp_;
    for (const int32_t index : touched) {
      if (visited_.size() < words_.size()) visited_.resize(words_.size(), 0);
      if (visited_[index] == stamp_) continue;  // listed once per occurrence of the pair
      visited_[index] = stamp_;
      add_pairs(index, -1);
      std::vector<int32_t>& s = words_[index].symbols;
      size_t out = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
          s[out++] = merged;
          ++i;
        } else {
          s[out++] = s[i];
        }
      }
      s.resize(out);
      add_pairs(index, +1);
    }
    pair_counts_.erase(pair);
    for (const uint64_t p : changed_) {
      const auto it = pair_counts_.find(p);
      if (it != pair_counts_.end() && it->second > 0) heap_.push({it->second, p});
    }
  }

  Learned& learned_;
  std::vector<Word> words_;
  std::unordered_map<uint64_t, int64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words_;  // may list a word repeatedly
  std::priority_queue<Candidate> heap_;  // lazily updated: stale entries are re-checked on pop
  std::vector<uint64_t> changed_;
  std::vector<uint32_t> visited_;
  uint32_t stamp_ = 0;
};

nlohmann::ordered_json split_step(const std::string& pattern) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", pattern}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

nlohmann::ordered_json byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

}  // namespace

std::span<const ChatTokenSpec> deepseek_chat_tokens() { return kChatTokens; }

BpeTrainer::BpeTrainer(BpeTrainerOptions options)
    : options_(options), pre_tokenizer_(deepseek_v3_split_patterns()) {
  const int32_t minimum = kChatTokenCount + 256;
  if (options_.vocab_size < minimum) {
    fail("vocab size {} is too small: the {} chat tokens and 256 byte tokens need at least {}",
         options_.vocab_size, kChatTokenCount, minimum);
  }
  if (options_.min_frequency < 1)
    fail("min frequency {} must be at least 1", options_.min_frequency);
  for (int32_t id = 0; id < kChatTokenCount; ++id)
    chat_tokens_.add(kChatTokens[id].content, id, true);
}

void BpeTrainer::add_text(std::string_view input) {
  const std::string text = sanitize_utf8(input);
  std::vector<TextSpan> spans;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto match = chat_tokens_.find(text, pos, true);
    const size_t end = match ? match->begin : text.size();
    const std::string_view segment(text.data() + pos, end - pos);
    pre_tokenizer_.split(segment, spans);
    for (const TextSpan span : spans)
      ++word_counts_[std::string(segment.substr(span.begin, span.end - span.begin))];
    if (!match) break;
    pos = match->end;
  }
}

std::string BpeTrainer::train_to_json() const {
  Learned learned;
  for (const ChatTokenSpec& token : kChatTokens) learned.token_bytes.emplace_back(token.content);
  for (int b = 0; b < 256; ++b) learned.token_bytes.emplace_back(1, static_cast<char>(b));
  MergeLearner(word_counts_, learned).run(options_.vocab_size, options_.min_frequency);

  using nlohmann::ordered_json;
  const ByteAlphabet& alphabet = byte_alphabet();
  ordered_json added_tokens = ordered_json::array();
  for (int32_t id = 0; id < kChatTokenCount; ++id) {
    added_tokens.push_back({{"id", id},
                            {"content", kChatTokens[id].content},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", false},
                            {"special", kChatTokens[id].special}});
  }
  ordered_json vocab = ordered_json::object();
  for (size_t id = kChatTokenCount; id < learned.token_bytes.size(); ++id) {
    vocab[alphabet.spell(learned.token_bytes[id])] = id;
  }
  ordered_json merges = ordered_json::array();
  for (const auto& [left, right] : learned.merges) {
    merges.push_back(alphabet.spell(learned.token_bytes[left]) + " " +
                     alphabet.spell(learned.token_bytes[right]));
  }
  ordered_json pre_steps = ordered_json::array();
  for (const std::string& pattern : deepseek_v3_split_patterns())
    pre_steps.push_back(split_step(pattern));
  pre_steps.push_back(byte_level(false, true, false));

  ordered_json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = std::move(added_tokens);
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", std::move(pre_steps)}};
  root["post_processor"] = byte_level(true, false, true);
  root["decoder"] = byte_level(true, true, true);
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", false},
                   {"vocab", std::move(vocab)},
                   {"merges", std::move(merges)}};
  return root.dump(1, ' ', false) + "\n";
}

}  // namespace dsa::text

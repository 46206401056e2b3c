#include "train/synthetic_tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <set>
#include <utility>

#include "core/error.h"
#include "train/data_random.h"

namespace dsa::train {
namespace {

// llama.cpp's passkey filler, one sentence per entry, cycled.
constexpr std::array<std::string_view, 5> kPasskeyFiller = {
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
    "There and back again."};

// Keys of kv_recall and the subjects of needles: short, common, one or two tokens in most
// vocabularies, all distinct.
constexpr std::array<std::string_view, 96> kWords = {
    "apple",  "river",  "stone",    "candle", "window",  "garden",  "silver",  "forest",
    "ladder", "pepper", "mirror",   "basket", "violin",  "anchor",  "harbor",  "lantern",
    "meadow", "pillow", "rocket",   "saddle", "thunder", "tunnel",  "walnut",  "button",
    "castle", "desert", "engine",   "falcon", "glacier", "hammer",  "island",  "jacket",
    "kettle", "lemon",  "marble",   "needle", "orange",  "pencil",  "quartz",  "rabbit",
    "spider", "tomato", "umbrella", "valley", "wagon",   "yellow",  "zebra",   "bridge",
    "cherry", "dragon", "feather",  "ginger", "helmet",  "igloo",   "jungle",  "kitten",
    "lizard", "magnet", "nickel",   "oyster", "parrot",  "puzzle",  "ribbon",  "sandal",
    "turtle", "velvet", "whistle",  "barrel", "cactus",  "dolphin", "emerald", "fountain",
    "goblet", "hazel",  "iron",     "jigsaw", "koala",   "locket",  "muffin",  "nectar",
    "olive",  "pebble", "quill",    "raven",  "spoon",   "tiger",   "copper",  "banner",
    "circus", "donkey", "eagle",    "fiddle", "granite", "honey",   "insect",  "juniper"};

constexpr std::string_view kPasskeyIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there.";
constexpr std::string_view kNeedleIntro =
    "Some special magic numbers are hidden within the following text. Make sure to memorize "
    "them. I will quiz you about the numbers afterwards.";
constexpr std::string_view kKvHeader = "Here is a list of keys and their values. Remember them.";
constexpr std::string_view kKvQuestion = "Now recall the value of each key.";

struct Laid {
  std::string prompt;
  std::string answer;
};

// Lays out a sample with `n` filler sentences, the fact placed after round(depth * n) of them.
using Layout = std::function<Laid(int64_t n, int64_t before)>;

int64_t sentences_before(double depth, int64_t n) {
  return int64_t(std::llround(depth * double(n)));
}

// Filler sentences 0..n-1 with `fact` inserted after `before` of them; `fact_separator` joins the
// fact to its neighbours (a space within prose, a newline around a list).
std::string haystack_with_fact(const std::function<std::string_view(int64_t)>& filler, int64_t n,
                               int64_t before, std::string_view fact, char fact_separator) {
  std::string out;
  auto append = [&out](std::string_view piece, char separator) {
    if (!out.empty()) out += separator;
    out += piece;
  };
  for (int64_t i = 0; i < before; ++i) append(filler(i), ' ');
  append(fact, fact_separator);
  for (int64_t i = before; i < n; ++i) append(filler(i), i == before ? fact_separator : ' ');
  return out;
}

void check_request(std::string_view kind, int64_t target_tokens, double depth) {
  if (target_tokens < 1)
    fail("synthetic {}: target length must be at least 1 token, got {}", kind, target_tokens);
  if (!(depth >= 0 && depth <= 1))
    fail("synthetic {}: depth must be in [0, 1], got {}", kind, depth);
}

}  // namespace

std::string_view synthetic_kind_name(SyntheticKind kind) {
  switch (kind) {
    case SyntheticKind::kPasskey:
      return "passkey";
    case SyntheticKind::kKeyValueRecall:
      return "kv_recall";
    case SyntheticKind::kNeedle:
      return "needle";
  }
  DSA_CHECK(false, "unknown synthetic kind {}", int(kind));
  return {};
}

std::optional<SyntheticKind> parse_synthetic_kind(std::string_view name) {
  for (int i = 0; i < kSyntheticKindCount; ++i) {
    if (synthetic_kind_name(SyntheticKind(i)) == name) return SyntheticKind(i);
  }
  return std::nullopt;
}

std::vector<std::string> split_sentences(std::string_view text) {
  std::vector<std::string> sentences;
  std::string current;
  auto flush = [&] {
    while (!current.empty() && current.back() == ' ') current.pop_back();
    if (!current.empty()) sentences.push_back(std::move(current));
    current.clear();
  };
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  auto is_closer = [](char c) { return c == '"' || c == '\'' || c == ')' || c == ']'; };
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (is_space(c)) {
      size_t newlines = 0;
      size_t j = i;
      for (; j < text.size() && is_space(text[j]); ++j) newlines += text[j] == '\n';
      if (newlines >= 2) {
        flush();  // a blank line ends a paragraph, and with it a sentence
      } else if (!current.empty()) {
        current += ' ';
      }
      i = j;
      continue;
    }
    current += c;
    ++i;
    if (c == '.' || c == '!' || c == '?') {
      while (i < text.size() && is_closer(text[i])) current += text[i++];
      if (i == text.size() || is_space(text[i])) flush();
    }
  }
  flush();
  return sentences;
}

SyntheticTaskGenerator::SyntheticTaskGenerator(const text::Tokenizer& tokenizer,
                                               std::vector<std::string> haystack,
                                               SyntheticOptions options)
    : tokenizer_(tokenizer), options_(options) {
  if (options.kv_pairs < 1 || options.kv_pairs > int(kWords.size())) {
    fail("synthetic kv_recall: kv_pairs must be in [1, {}], got {}", kWords.size(),
         options.kv_pairs);
  }
  if (options.kv_queries < 1 || options.kv_queries > options.kv_pairs) {
    fail("synthetic kv_recall: kv_queries must be in [1, kv_pairs = {}], got {}", options.kv_pairs,
         options.kv_queries);
  }
  for (std::string& sentence : haystack) {
    const bool has_digit =
        std::any_of(sentence.begin(), sentence.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!has_digit && sentence.find("->") == std::string::npos)
      haystack_.push_back(std::move(sentence));
  }
}

int64_t SyntheticTaskGenerator::count_tokens(std::string_view text) const {
  return int64_t(tokenizer_.encode(text, /*allow_special=*/false).size());
}

namespace {

// The largest number of filler sentences whose sample fits in `target` tokens: a guess from the
// cost of 16 sentences, then doubling steps and bisection (token counts grow with the filler,
// and every answer is checked by encoding the whole sample).
SyntheticSample fit_sample(const SyntheticTaskGenerator& generator, SyntheticKind kind,
                           int64_t target, double depth, const Layout& layout) {
  auto count = [&](int64_t n) {
    const Laid laid = layout(n, sentences_before(depth, n));
    return generator.count_tokens(laid.prompt + laid.answer);
  };
  const int64_t bare = count(0);
  if (bare > target) {
    fail(
        "synthetic {}: target length {} tokens is too short: the task takes {} tokens without "
        "any filler",
        synthetic_kind_name(kind), target, bare);
  }
  constexpr int64_t kProbe = 16;
  const int64_t per_probe = std::max<int64_t>(1, count(kProbe) - bare);
  int64_t lo = 0;  // count(lo) <= target
  int64_t hi = 0;  // count(hi) > target once found
  const int64_t guess = std::max<int64_t>(1, (target - bare) * kProbe / per_probe);
  if (count(guess) <= target) {
    lo = guess;
    int64_t step = std::max<int64_t>(1, guess / 16);
    for (hi = lo + step; count(hi) <= target; hi = lo + step) {
      lo = hi;
      step *= 2;
    }
  } else {
    hi = guess;
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (count(mid) <= target ? lo : hi) = mid;
  }
  SyntheticSample sample;
  sample.kind = kind;
  const int64_t before = sentences_before(depth, lo);
  Laid laid = layout(lo, before);
  sample.prompt = std::move(laid.prompt);
  sample.answer = std::move(laid.answer);
  sample.target_tokens = target;
  sample.tokens = generator.count_tokens(sample.prompt + sample.answer);
  sample.depth = depth;
  sample.filler_sentences = lo;
  sample.sentences_before = before;
  DSA_CHECK(sample.tokens <= target, "fitted sample has {} tokens for a target of {}",
            sample.tokens, target);
  return sample;
}

}  // namespace

SyntheticSample SyntheticTaskGenerator::passkey(int64_t target_tokens, double depth,
                                                uint64_t seed) const {
  check_request("passkey", target_tokens, depth);
  SplitMix64 rng(hash_pair(seed, uint64_t(SyntheticKind::kPasskey)));
  const uint64_t key = 1 + rng.below(50000);  // llama.cpp draws 1..50000
  const std::string fact =
      fmt::format("The pass key is {0}. Remember it. {0} is the pass key.", key);
  auto filler = [](int64_t i) { return kPasskeyFiller[size_t(i) % kPasskeyFiller.size()]; };
  const Layout layout = [&](int64_t n, int64_t before) {
    Laid laid;
    laid.prompt = fmt::format("{}\n{}\nWhat is the pass key? The pass key is", kPasskeyIntro,
                              haystack_with_fact(filler, n, before, fact, ' '));
    laid.answer = fmt::format(" {}.", key);
    return laid;
  };
  return fit_sample(*this, SyntheticKind::kPasskey, target_tokens, depth, layout);
}

SyntheticSample SyntheticTaskGenerator::key_value_recall(int64_t target_tokens, double depth,
                                                         uint64_t seed) const {
  check_request("kv_recall", target_tokens, depth);
  SplitMix64 rng(hash_pair(seed, uint64_t(SyntheticKind::kKeyValueRecall)));
  // Distinct keys (a partial Fisher-Yates over the word list) and distinct 4-digit values.
  std::array<size_t, kWords.size()> order;
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const size_t pairs = size_t(options_.kv_pairs);
  for (size_t i = 0; i < pairs; ++i)
    std::swap(order[i], order[i + size_t(rng.below(order.size() - i))]);
  std::vector<uint64_t> values;
  std::set<uint64_t> used;
  while (values.size() < pairs) {
    const uint64_t value = 1000 + rng.below(9000);
    if (used.insert(value).second) values.push_back(value);
  }
  std::string block(kKvHeader);
  for (size_t i = 0; i < pairs; ++i)
    block += fmt::format("\n{} -> {}", kWords[order[i]], values[i]);
  // The queries: distinct pairs in random order.
  std::vector<size_t> queries(pairs);
  for (size_t i = 0; i < pairs; ++i) queries[i] = i;
  for (size_t i = 0; i < size_t(options_.kv_queries); ++i) {
    std::swap(queries[i], queries[i + size_t(rng.below(pairs - i))]);
  }
  queries.resize(size_t(options_.kv_queries));
  std::string recall(kKvQuestion);
  for (size_t q = 0; q + 1 < queries.size(); ++q) {
    recall += fmt::format("\n{} -> {}", kWords[order[queries[q]]], values[queries[q]]);
  }
  recall += fmt::format("\n{} ->", kWords[order[queries.back()]]);
  const std::string answer = fmt::format(" {}", values[queries.back()]);

  const uint64_t offset = haystack_.empty() ? 0 : rng.below(haystack_.size());
  const std::function<std::string_view(int64_t)> filler = [&](int64_t i) -> std::string_view {
    if (haystack_.empty()) return kPasskeyFiller[size_t(i) % kPasskeyFiller.size()];
    return haystack_[(offset + uint64_t(i)) % haystack_.size()];
  };
  const Layout layout = [&](int64_t n, int64_t before) {
    Laid laid;
    laid.prompt = haystack_with_fact(filler, n, before, block, '\n') + "\n" + recall;
    laid.answer = answer;
    return laid;
  };
  return fit_sample(*this, SyntheticKind::kKeyValueRecall, target_tokens, depth, layout);
}

SyntheticSample SyntheticTaskGenerator::needle(int64_t target_tokens, double depth,
                                               uint64_t seed) const {
  check_request("needle", target_tokens, depth);
  if (haystack_.empty()) {
    fail("synthetic needle: no haystack text (give corpus sentences without digits)");
  }
  SplitMix64 rng(hash_pair(seed, uint64_t(SyntheticKind::kNeedle)));
  const std::string_view word = kWords[size_t(rng.below(kWords.size()))];
  const uint64_t number = 1000000 + rng.below(9000000);  // 7 digits, as RULER's
  const std::string fact = fmt::format("The special magic number for {} is {}.", word, number);
  const uint64_t offset = rng.below(haystack_.size());
  const std::function<std::string_view(int64_t)> filler = [&](int64_t i) -> std::string_view {
    return haystack_[(offset + uint64_t(i)) % haystack_.size()];
  };
  const Layout layout = [&](int64_t n, int64_t before) {
    Laid laid;
    laid.prompt = fmt::format(
        "{}\n{}\nWhat is the special magic number for {} mentioned in the provided text? The "
        "special magic number for {} mentioned in the provided text is",
        kNeedleIntro, haystack_with_fact(filler, n, before, fact, ' '), word, word);
    laid.answer = fmt::format(" {}.", number);
    return laid;
  };
  return fit_sample(*this, SyntheticKind::kNeedle, target_tokens, depth, layout);
}

SyntheticSample SyntheticTaskGenerator::generate(SyntheticKind kind, int64_t target_tokens,
                                                 double depth, uint64_t seed) const {
  switch (kind) {
    case SyntheticKind::kPasskey:
      return passkey(target_tokens, depth, seed);
    case SyntheticKind::kKeyValueRecall:
      return key_value_recall(target_tokens, depth, seed);
    case SyntheticKind::kNeedle:
      return needle(target_tokens, depth, seed);
  }
  DSA_CHECK(false, "unknown synthetic kind {}", int(kind));
  return {};
}

}  // namespace dsa::train

// Finds added tokens in text before pre-tokenization: at the leftmost position where any added
// token starts, the longest one wins (HF's AddedVocabulary, an Aho-Corasick leftmost-longest
// search). Special tokens can be switched off per search so they are encoded as plain text.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dsa::text {

struct AddedTokenMatch {
  size_t begin = 0;
  size_t end = 0;
  int32_t id = 0;
};

class AddedTokenMatcher {
 public:
  void add(std::string_view content, int32_t id, bool special);
  bool empty() const { return nodes_.size() <= 1; }
  // The first match at or after `from`, if any.
  std::optional<AddedTokenMatch> find(std::string_view text, size_t from, bool allow_special) const;

 private:
  struct Node {
    int32_t token = -1;  // id of the token ending here, or -1
    bool special = false;
  };
  int32_t child(int32_t node, uint8_t byte) const;

  std::vector<Node> nodes_{Node{}};              // a byte trie; node 0 is the root
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child node
  std::array<bool, 256> can_start_{};            // first bytes of the tokens, to skip text quickly
};

}  // namespace dsa::text

#include "text/tokenizer_added_tokens.h"

namespace dsa::text {

int32_t AddedTokenMatcher::child(int32_t node, uint8_t byte) const {
  const auto it = edges_.find((static_cast<uint64_t>(node) << 8) | byte);
  return it == edges_.end() ? -1 : it->second;
}

void AddedTokenMatcher::add(std::string_view content, int32_t id, bool special) {
  if (content.empty()) return;
  can_start_[static_cast<uint8_t>(content[0])] = true;
  int32_t node = 0;
  for (const char c : content) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
    const auto [it, inserted] = edges_.try_emplace(key, static_cast<int32_t>(nodes_.size()));
    if (inserted) nodes_.emplace_back();
    node = it->second;
  }
  nodes_[node] = Node{id, special};
}

std::optional<AddedTokenMatch> AddedTokenMatcher::find(std::string_view text, size_t from,
                                                       bool allow_special) const {
  for (size_t begin = from; begin < text.size(); ++begin) {
    if (!can_start_[static_cast<uint8_t>(text[begin])]) continue;
    std::optional<AddedTokenMatch> longest;
    int32_t node = 0;
    for (size_t i = begin; i < text.size(); ++i) {
      node = child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      const Node& n = nodes_[node];
      if (n.token >= 0 && (allow_special || !n.special))
        longest = AddedTokenMatch{begin, i + 1, n.token};
    }
    if (longest) return longest;
  }
  return std::nullopt;
}

}  // namespace dsa::text

#include "text/bpe_model.h"

#include <algorithm>
#include <queue>

namespace dsa::text {

BpeModel::BpeModel(const std::array<int32_t, 256>& byte_ids, const std::vector<BpeMerge>& merges)
    : byte_ids_(byte_ids) {
  int bits = 1;
  while ((size_t{1} << bits) < merges.size() * 2) ++bits;
  slots_.resize(size_t{1} << bits);
  hash_shift_ = 64 - bits;
  const size_t mask = slots_.size() - 1;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const BpeMerge& m = merges[rank];
    const uint64_t key = pair_key(m.left, m.right);
    size_t i = slot_index(key);
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask;
    // A repeated pair keeps its first (best) rank, as in HF.
    if (slots_[i].key == kEmpty) slots_[i] = Slot{key, Rule{static_cast<int32_t>(rank), m.merged}};
  }
}

const BpeModel::Rule* BpeModel::find_rule(int32_t left, int32_t right) const {
  if (slots_.empty()) return nullptr;
  const uint64_t key = pair_key(left, right);
  const size_t mask = slots_.size() - 1;
  for (size_t i = slot_index(key);; i = (i + 1) & mask) {
    if (slots_[i].key == key) return &slots_[i].rule;
    if (slots_[i].key == kEmpty) return nullptr;
  }
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  // Symbols form a doubly linked list over the word's bytes; a heap holds candidate merges
  // ordered by (rank, position). Entries made stale by an earlier merge are skipped on pop.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;  // -1 at the ends
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol
    int32_t left;
    int32_t right;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  for (const char c : word) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) continue;
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  }
  if (symbols.size() > 1) {
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    const auto push_pair = [&](int32_t pos) {
      const int32_t next = symbols[pos].next;
      if (next < 0) return;
      if (const Rule* rule = find_rule(symbols[pos].id, symbols[next].id)) {
        heap.push({rule->rank, pos, symbols[pos].id, symbols[next].id});
      }
    };
    for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) push_pair(pos);
    while (!heap.empty()) {
      const Candidate top = heap.top();
      heap.pop();
      Symbol& left = symbols[top.pos];
      // Merged-away symbols get id -1; a changed id on either side means the entry is stale.
      if (left.id != top.left || left.next < 0 || symbols[left.next].id != top.right) continue;
      Symbol& right = symbols[left.next];
      left.id = find_rule(top.left, top.right)->merged;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      right.id = -1;
      if (left.prev >= 0) push_pair(left.prev);
      push_pair(top.pos);
    }
  }
  for (int32_t pos = symbols.empty() ? -1 : 0; pos >= 0; pos = symbols[pos].next) {
    out.push_back(symbols[pos].id);
  }
}

void BpeModel::encode_word_reference(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<int32_t> ids;
  for (const char c : word) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) ids.push_back(id);
  }
  while (ids.size() > 1) {
    size_t best = ids.size();
    const Rule* best_rule = nullptr;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const Rule* rule = find_rule(ids[i], ids[i + 1]);
      if (rule && (!best_rule || rule->rank < best_rule->rank)) {
        best = i;
        best_rule = rule;
      }
    }
    if (!best_rule) break;
    ids[best] = best_rule->merged;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

}  // namespace dsa::text

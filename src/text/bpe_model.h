// The BPE model of a byte-level tokenizer: a word (the bytes of one pre-token) starts as one
// symbol per byte and the adjacent pair with the lowest merge rank is merged, leftmost first,
// until no pair has a merge (Hugging Face's BPE::merge_word without dropout).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::text {

struct BpeMerge {
  int32_t left = 0;
  int32_t right = 0;
  int32_t merged = 0;  // the id of left's text + right's text
};

class BpeModel {
 public:
  BpeModel() = default;
  // `byte_ids[b]` is the id of the single-byte token for byte b, or -1 if the vocabulary lacks it
  // (HF then drops that byte, as there is no unknown token). `merges` is in rank order.
  BpeModel(const std::array<int32_t, 256>& byte_ids, const std::vector<BpeMerge>& merges);

  // Appends the ids of one word's bytes to `out`.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  // The plain quadratic algorithm (rescan for the best pair after every merge): the readable
  // reference that tests compare encode_word against.
  void encode_word_reference(std::string_view word, std::vector<int32_t>& out) const;

 private:
  struct Rule {
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const Rule* find_rule(int32_t left, int32_t right) const;

  // (left, right) -> rule in an open-addressing table with linear probing: the lookup is the hot
  // loop of encoding, and std::unordered_map's node chasing made it 3x slower.
  struct Slot {
    uint64_t key = kEmpty;
    Rule rule;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // no valid pair has both ids = -1
  size_t slot_index(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> hash_shift_; }

  std::array<int32_t, 256> byte_ids_{};
  std::vector<Slot> slots_;  // size a power of two, at most half full
  int hash_shift_ = 64;
};

}  // namespace dsa::text

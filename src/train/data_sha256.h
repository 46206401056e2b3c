// SHA-256 (FIPS 180-4), for the fingerprint of the tokenizer a data set was built with: a
// trainer compares it with its own tokenizer.json before it reads a single token.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace dsa::train {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const uint8_t> bytes);
  void update(std::string_view bytes);
  // The digest; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();

 private:
  void compress(const uint8_t* block);  // one 64-byte block

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lower-case hex digest of `bytes`.
std::string sha256_hex(std::string_view bytes);
// Lower-case hex digest of a file's bytes; throws dsa::Error naming the file when it cannot be
// read.
std::string sha256_file_hex(const std::filesystem::path& path);

}  // namespace dsa::train

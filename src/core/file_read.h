// Opening and reading the files a user hands the engine (config.json, the safetensors index and
// shards, tokenizer.json, prompt and token files) without trusting what they are.
//
// A path may name a FIFO, a directory, a device or a socket instead of a file. Opening a FIFO for
// reading blocks until a writer appears, and reading /dev/zero never ends, so every such file is
// opened non-blocking, checked with fstat on the opened descriptor (no race between check and
// use), and refused unless it is a regular file. Symbolic links are followed: Hugging Face's cache
// links each snapshot file to a blob elsewhere, and that must keep working.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace dsa {

// Largest text file read whole: config.json, model.safetensors.index.json, tokenizer.json,
// tokenizer_config.json, prompt and token files. DeepSeek-V3's largest (tokenizer.json) is
// about 8 MB; anything near this size is not one of these files.
constexpr uint64_t kMaxTextFileBytes = uint64_t(64) << 20;

// A descriptor of an opened regular file, closed on destruction. `role` names the file in errors
// ("config file", "tokenizer file"), so that the user learns which input is wrong.
class RegularFile {
 public:
  // Throws dsa::Error naming the path and what it is when it is not a regular file (or a link to
  // one), or cannot be opened.
  RegularFile(const std::filesystem::path& path, std::string_view role);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int descriptor() const { return fd_; }
  uint64_t size() const { return size_; }  // at the time of the open

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
};

// The whole content of a regular file of at most `max_bytes` bytes; a larger one is a dsa::Error
// naming the limit, and is refused before any of it is read.
std::string read_regular_file(const std::filesystem::path& path, std::string_view role,
                              uint64_t max_bytes = kMaxTextFileBytes);

// "a FIFO", "a directory", "a character device", ... for an st_mode that is not a regular file.
std::string_view file_kind_phrase(unsigned mode);

}  // namespace dsa

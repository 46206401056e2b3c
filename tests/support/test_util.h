// Helpers shared by the tests: paths, temporary folders, running the dsa binary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace dsa::test {

// tests/data in the source tree.
std::filesystem::path data_dir();

// A fresh, empty folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the built dsa binary with `args` (a shell-quoted argument string), optional stdin text.
CommandResult run_dsa(const std::string& args, const std::string& stdin_text = "");

std::string read_text_file(const std::filesystem::path& path);
void write_text_file(const std::filesystem::path& path, const std::string& text);

// The [rows, cols] fp32 payload of an .npy file written by dsa (`dsa logits`); a wrong magic,
// shape or size is a test failure (and an empty or partial result).
std::vector<float> read_npy(const std::filesystem::path& path, int64_t rows, int64_t cols);

}  // namespace dsa::test

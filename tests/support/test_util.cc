#include "support/test_util.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace dsa::test {

std::filesystem::path data_dir() { return DSA_TEST_DATA_DIR; }

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  std::random_device random;
  path_ = std::filesystem::temp_directory_path() /
          ("dsa-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" +
           std::to_string(random()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

CommandResult run_dsa(const std::string& args, const std::string& stdin_text) {
  TempDir scratch;
  const auto in_path = scratch / "stdin";
  const auto out_path = scratch / "stdout";
  const auto err_path = scratch / "stderr";
  write_text_file(in_path, stdin_text);
  const std::string command = std::string("'") + DSA_BINARY + "' " + args + " <'" +
                              in_path.string() + "' >'" + out_path.string() + "' 2>'" +
                              err_path.string() + "'";
  const int status = std::system(command.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_text_file(out_path);
  result.err = read_text_file(err_path);
  return result;
}

std::vector<float> read_npy(const std::filesystem::path& path, int64_t rows, int64_t cols) {
  const std::string bytes = read_text_file(path);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  if (bytes.size() < 10) return {};
  const size_t header = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
  EXPECT_NE(bytes.find(fmt::format("'shape': ({}, {})", rows, cols)), std::string::npos);
  std::vector<float> out(size_t(rows * cols));
  EXPECT_EQ(bytes.size(), 10 + header + out.size() * 4);
  if (bytes.size() == 10 + header + out.size() * 4) {
    std::memcpy(out.data(), bytes.data() + 10 + header, out.size() * 4);
  }
  return out;
}

}  // namespace dsa::test

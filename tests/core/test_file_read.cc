// The shared reader of user files: regular files (and links to them) are read whole; a FIFO,
// directory, device or socket is refused at once with an error naming the path and what it is;
// a file over the size limit is refused before it is read.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>

#include "core/error.h"
#include "core/file_read.h"
#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// The dsa::Error message of `read`, failing the test when it does not throw. An alarm ends the
// test binary if the call blocks (as opening a FIFO for reading does without O_NONBLOCK), so a
// regression fails instead of hanging the suite.
std::string error_of(const std::function<void()>& read) {
  alarm(10);
  std::string message;
  try {
    read();
    ADD_FAILURE() << "expected a dsa::Error";
  } catch (const Error& error) {
    message = error.what();
  }
  alarm(0);
  return message;
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in: " << text;
}

TEST(FileRead, ReadsARegularFileWhole) {
  TempDir dir;
  std::string bytes = "line one\nline two\n";
  bytes += std::string(200000, 'x');  // more than one read() chunk
  bytes += '\0';
  test::write_text_file(dir / "a.txt", bytes);
  EXPECT_EQ(read_regular_file(dir / "a.txt", "test file"), bytes);
  test::write_text_file(dir / "empty", "");
  EXPECT_EQ(read_regular_file(dir / "empty", "test file"), "");
  const RegularFile file(dir / "a.txt", "test file");
  EXPECT_EQ(file.size(), bytes.size());
  EXPECT_GE(file.descriptor(), 0);
}

TEST(FileRead, FollowsSymbolicLinksToFiles) {
  TempDir dir;
  fs::create_directories(dir / "blobs");
  test::write_text_file(dir / "blobs" / "abc123", "{\"a\": 1}");
  fs::create_directories(dir / "snapshot");
  fs::create_symlink("../blobs/abc123", dir / "snapshot" / "config.json");
  EXPECT_EQ(read_regular_file(dir / "snapshot" / "config.json", "config"), "{\"a\": 1}");
}

TEST(FileRead, RefusesAFifoWithoutBlocking) {
  TempDir dir;
  const fs::path fifo = dir / "config.json";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of([&] { read_regular_file(fifo, "model config"); });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
  expect_contains(message, "model config " + fifo.string());
  expect_contains(message, "is a FIFO (named pipe), not a regular file");
  // A link to a FIFO is no better.
  fs::create_symlink(fifo, dir / "link.json");
  expect_contains(error_of([&] { RegularFile(dir / "link.json", "model config"); }), "FIFO");
}

TEST(FileRead, RefusesDirectoriesDevicesAndSockets) {
  TempDir dir;
  expect_contains(error_of([&] { read_regular_file(dir.path(), "tokenizer file"); }),
                  "tokenizer file " + dir.path().string() + " is a directory, not a regular file");
  if (fs::exists("/dev/zero")) {  // reading it would never end
    expect_contains(error_of([&] { read_regular_file("/dev/zero", "prompt file"); }),
                    "/dev/zero is a character device");
  }
  const fs::path socket_path = dir / "s";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  ASSERT_LT(socket_path.string().size(), sizeof address.sun_path);
  std::strcpy(address.sun_path, socket_path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  expect_contains(error_of([&] { read_regular_file(socket_path, "index"); }), "is a socket");
  ::close(fd);
}

TEST(FileRead, MissingFileNamesThePathAndTheReason) {
  const std::string message =
      error_of([] { read_regular_file("/nonexistent/config.json", "model config"); });
  expect_contains(message, "cannot open model config /nonexistent/config.json");
  expect_contains(message, "No such file");
}

TEST(FileRead, SizeLimitIsEnforcedBeforeReading) {
  TempDir dir;
  test::write_text_file(dir / "ten", "0123456789");
  EXPECT_EQ(read_regular_file(dir / "ten", "test file", 10), "0123456789");
  expect_contains(error_of([&] { read_regular_file(dir / "ten", "test file", 9); }),
                  "test file " + (dir / "ten").string() +
                      " is 10 bytes, more than the 9 bytes limit on files read whole");
  // A sparse file one byte over the default limit: refused from its size, nothing is read.
  const fs::path big = dir / "tokenizer.json";
  test::write_text_file(big, "");
  fs::resize_file(big, kMaxTextFileBytes + 1);
  expect_contains(error_of([&] { read_regular_file(big, "tokenizer file"); }),
                  "more than the 64 MiB limit");
}

TEST(FileRead, KindPhrases) {
  EXPECT_EQ(file_kind_phrase(S_IFIFO), "a FIFO (named pipe)");
  EXPECT_EQ(file_kind_phrase(S_IFDIR), "a directory");
  EXPECT_EQ(file_kind_phrase(S_IFBLK), "a block device");
  EXPECT_EQ(file_kind_phrase(S_IFREG), "a regular file");
}

}  // namespace
}  // namespace dsa

#include "core/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "core/error.h"

namespace dsa {
namespace {

std::string errno_message(int error) { return std::system_category().message(error); }

// The MiB figure of a limit, for messages: "64 MiB".
std::string limit_phrase(uint64_t bytes) {
  if (bytes >= (uint64_t(1) << 20) && bytes % (uint64_t(1) << 20) == 0) {
    return fmt::format("{} MiB", bytes >> 20);
  }
  return fmt::format("{} bytes", bytes);
}

[[noreturn]] void fail_not_regular(const std::filesystem::path& path, std::string_view role,
                                   unsigned mode) {
  fail("{} {} is {}, not a regular file", role, path.string(), file_kind_phrase(mode));
}

}  // namespace

std::string_view file_kind_phrase(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "of an unknown file type";
}

RegularFile::RegularFile(const std::filesystem::path& path, std::string_view role) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. Opening a
  // socket fails (ENXIO); stat then says what the path is, which tells more than the errno text.
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) {
    const int error = errno;
    struct stat info {};
    if (::stat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode)) {
      fail_not_regular(path, role, info.st_mode);
    }
    fail("cannot open {} {}: {}", role, path.string(), errno_message(error));
  }
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    const int error = errno;
    ::close(fd_);
    fail("cannot stat {} {}: {}", role, path.string(), errno_message(error));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd_);
    fail_not_regular(path, role, info.st_mode);
  }
  size_ = uint64_t(info.st_size);
  // A regular file ignores O_NONBLOCK on Linux, but reads elsewhere (network file systems, other
  // systems) may honour it and return EAGAIN; plain blocking reads are what callers expect.
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const int error = errno;
    ::close(fd_);
    fail("cannot set up reading {} {}: {}", role, path.string(), errno_message(error));
  }
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string read_regular_file(const std::filesystem::path& path, std::string_view role,
                              uint64_t max_bytes) {
  const RegularFile file(path, role);
  const auto too_large = [&](uint64_t size) {
    fail("{} {} is {} bytes, more than the {} limit on files read whole", role, path.string(), size,
         limit_phrase(max_bytes));
  };
  if (file.size() > max_bytes) too_large(file.size());
  std::string text;
  text.reserve(size_t(file.size()));
  // Read until end of file rather than trusting the size: the file may grow while it is read (a
  // log being written), and /proc-like files report 0. One byte more than the limit is enough to
  // tell that the file is too large.
  char chunk[1 << 16];
  for (;;) {
    const ssize_t got = ::read(file.descriptor(), chunk, sizeof chunk);
    if (got < 0) {
      if (errno == EINTR) continue;
      fail("cannot read {} {}: {}", role, path.string(), errno_message(errno));
    }
    if (got == 0) break;
    text.append(chunk, size_t(got));
    if (text.size() > max_bytes) too_large(text.size());
  }
  return text;
}

}  // namespace dsa

// Errors. User errors (files, configs, requests, flags) throw dsa::Error with what, where and the
// expected vs actual value. Broken internal invariants throw dsa::InternalError from DSA_CHECK,
// which is always on. DSA_DCHECK guards hot loops and is compiled only into Debug/sanitizer builds.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace dsa {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& what) : std::logic_error(what) {}
};

// Throws dsa::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

[[noreturn]] void check_failed(const char* file, int line, const char* condition,
                               const std::string& message);

}  // namespace dsa

#define DSA_CHECK(cond, ...)                                                              \
  do {                                                                                    \
    if (!(cond)) ::dsa::check_failed(__FILE__, __LINE__, #cond, ::fmt::format("" __VA_ARGS__)); \
  } while (0)

#if defined(DSA_DEBUG_CHECKS)
#define DSA_DCHECK(cond, ...) DSA_CHECK(cond, __VA_ARGS__)
#else
#define DSA_DCHECK(cond, ...) \
  do {                        \
  } while (0)
#endif

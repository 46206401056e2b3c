#include "core/error.h"

namespace dsa {

void check_failed(const char* file, int line, const char* condition, const std::string& message) {
  std::string what = fmt::format("internal check failed at {}:{}: {}", file, line, condition);
  if (!message.empty()) what += " (" + message + ")";
  throw InternalError(what);
}

}  // namespace dsa

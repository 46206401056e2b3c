#include "runtime/stop_string_filter.h"

#include <algorithm>
#include <utility>

namespace dsa {

StopStringFilter::Result StopStringFilter::push(std::string_view piece) {
  held_ += piece;
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) return {held_.substr(0, first), true};
  // The longest suffix of held_ that is a proper prefix of a stop string.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  Result r{held_.substr(0, held_.size() - keep), false};
  held_.erase(0, held_.size() - keep);
  return r;
}

std::string StopStringFilter::release() { return std::exchange(held_, {}); }

}  // namespace dsa

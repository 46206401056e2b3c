// Identifiers the API hands out: chatcmpl-..., cmpl-..., call_...
#pragma once

#include <string>
#include <string_view>

namespace dsa::server {

// `prefix` followed by `length` random letters and digits (from a generator seeded by the
// system's entropy once per thread): unique enough for ids that only have to differ between
// replies and calls, and never derived from a request's seed, which may repeat.
std::string random_id(std::string_view prefix, size_t length = 24);

}  // namespace dsa::server

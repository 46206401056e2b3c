#pragma once

#include <string_view>

namespace dsa {

inline constexpr std::string_view kVersion = "0.1.0";

#if defined(DSA_HAVE_CUDA)
inline constexpr bool kCudaBuilt = true;
#else
inline constexpr bool kCudaBuilt = false;
#endif

}  // namespace dsa

// CUDA device discovery. Only compiled when the CUDA backend is built.
#pragma once

#include <string>
#include <vector>

namespace dsa::cuda {

// One description per device ("NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90"). When there is none,
// `status` says why (no driver, no device, ...).
std::vector<std::string> list_devices(std::string& status);

}  // namespace dsa::cuda

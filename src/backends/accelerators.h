// Which accelerators this build can use on this machine (for `dsa info`, benchmarks and for GPU
// tests, which skip themselves when no device is present).
#pragma once

#include <string>
#include <vector>

namespace dsa {

struct AcceleratorInfo {
  bool cuda_built = false;           // compiled with the CUDA backend
  std::vector<std::string> devices;  // one line per usable CUDA device: name, memory, SM version
  std::string status;                // why there is none, when `devices` is empty
};

AcceleratorInfo query_accelerators();

}  // namespace dsa

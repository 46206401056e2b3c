#include <cuda_runtime.h>

#include <cstdio>

#include "backends/cuda/cuda_devices.h"

namespace dsa::cuda {

std::vector<std::string> list_devices(std::string& status) {
  std::vector<std::string> devices;
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    status = std::string("no usable CUDA device: ") + cudaGetErrorString(error);
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, i) != cudaSuccess) continue;
    char line[256];
    std::snprintf(line, sizeof line, "%s, %.1f GiB, sm_%d%d", props.name,
                  double(props.totalGlobalMem) / (1 << 30), props.major, props.minor);
    devices.emplace_back(line);
  }
  if (devices.empty()) status = "no CUDA device found";
  return devices;
}

}  // namespace dsa::cuda

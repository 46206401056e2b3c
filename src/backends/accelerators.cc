#include "backends/accelerators.h"

#if defined(DSA_HAVE_CUDA)
#include "backends/cuda/cuda_devices.h"
#endif

namespace dsa {

AcceleratorInfo query_accelerators() {
  AcceleratorInfo info;
#if defined(DSA_HAVE_CUDA)
  info.cuda_built = true;
  info.devices = cuda::list_devices(info.status);
#else
  info.status = "built without the CUDA backend";
#endif
  return info;
}

}  // namespace dsa

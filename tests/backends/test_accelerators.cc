#include <gtest/gtest.h>

#include "backends/accelerators.h"

namespace dsa {
namespace {

TEST(Accelerators, ReportIsConsistentWithTheBuild) {
  const AcceleratorInfo info = query_accelerators();
#if defined(DSA_HAVE_CUDA)
  EXPECT_TRUE(info.cuda_built);
#else
  EXPECT_FALSE(info.cuda_built);
  EXPECT_TRUE(info.devices.empty());
#endif
  // Either there are devices, or the report says why not.
  EXPECT_NE(info.devices.empty(), info.status.empty());
  for (const auto& device : info.devices) EXPECT_NE(device.find("sm_"), std::string::npos);
}

}  // namespace
}  // namespace dsa

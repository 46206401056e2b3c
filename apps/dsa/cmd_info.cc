// `dsa info`: what this build is and what it can use on this machine.
#include <fmt/format.h>

#include "backends/accelerators.h"
#include "commands.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "core/version.h"

namespace dsa::cli {

void register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show the build and the machine's capabilities");
  cmd->callback([] {
    const CpuFeatures cpu = detect_cpu_features();
    fmt::print("dsa {}\n", kVersion);
    fmt::print("threads      {}\n", ThreadPool::hardware_threads());
    fmt::print("cpu          avx2={} fma={} f16c={} avx512f={} avx512bf16={}\n", cpu.avx2, cpu.fma,
               cpu.f16c, cpu.avx512f, cpu.avx512bf16);
    const AcceleratorInfo accelerators = query_accelerators();
    fmt::print("cuda         {}\n", accelerators.cuda_built ? "built" : "not built");
    for (const auto& device : accelerators.devices) fmt::print("gpu          {}\n", device);
    if (accelerators.devices.empty()) fmt::print("gpu          none ({})\n", accelerators.status);
  });
}

}  // namespace dsa::cli

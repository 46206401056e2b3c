#include "core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdint>

namespace dsa {

#if defined(__x86_64__) || defined(__i386__)
namespace {

bool bit(uint32_t value, int index) { return (value >> index) & 1u; }

// Which register states the OS saves on context switch (XCR0): AVX needs XMM+YMM (bits 1, 2),
// AVX-512 also the opmask and upper ZMM states (bits 5, 6, 7).
uint64_t os_saved_states() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

}  // namespace

CpuFeatures detect_cpu_features() {
  // Read from CPUID directly: compilers disagree on which names __builtin_cpu_supports knows.
  CpuFeatures features;
  uint32_t eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return features;
  const bool osxsave = bit(ecx, 27);
  const bool avx = bit(ecx, 28) && osxsave && (os_saved_states() & 0x6) == 0x6;
  const bool avx512_state = osxsave && (os_saved_states() & 0xE6) == 0xE6;
  features.fma = avx && bit(ecx, 12);
  features.f16c = avx && bit(ecx, 29);
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    features.avx2 = avx && bit(ebx, 5);
    features.avx512f = avx512_state && bit(ebx, 16);
  }
  if (features.avx512f && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) {
    features.avx512bf16 = bit(eax, 5);
  }
  return features;
}
#else
CpuFeatures detect_cpu_features() { return {}; }
#endif

}  // namespace dsa

// AVX512 (F/BW/VL/DQ, the set ATen's AVX512 capability requires) build of the CPU kernels.
// Same scheme as kernels_avx2.cpp.
// GCC's own AVX512 intrinsics headers start some intrinsics from `_mm512_undefined_*()`, which
// -Wall reports as uninitialised use in every function that inlines them; the warnings are
// about those headers, not this code, and would drown the build log.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "kernels_prelude.h"

#if ROBUST_LIGHTNING_HAVE_TARGET_PRAGMAS
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt")
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "sleef_for_target.h"
#include "kernels_impl.h"
#pragma GCC pop_options

namespace robust_lightning::cpu {
const KernelTable* kernels_AVX512() {
  return AVX512::kernel_table("AVX512");
}
} // namespace robust_lightning::cpu

#else

namespace robust_lightning::cpu {
const KernelTable* kernels_AVX512() {
  return nullptr;
}
} // namespace robust_lightning::cpu

#endif

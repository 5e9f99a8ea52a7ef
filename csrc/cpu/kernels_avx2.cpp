// AVX2 + FMA build of the CPU kernels.
//
// setuptools compiles every source of an extension with the same flags, so instead of
// `-mavx2` for this file we retarget the code *after* kernels_prelude.h with a pragma; see
// that header for why everything else must be included first. Nothing here runs unless
// active_kernels() found an AVX2-capable CPU.
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
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "sleef_for_target.h"
#include "kernels_impl.h"
#pragma GCC pop_options

namespace robust_lightning::cpu {
const KernelTable* kernels_AVX2() {
  return AVX2::kernel_table("AVX2");
}
} // namespace robust_lightning::cpu

#else

namespace robust_lightning::cpu {
const KernelTable* kernels_AVX2() {
  return nullptr;
}
} // namespace robust_lightning::cpu

#endif

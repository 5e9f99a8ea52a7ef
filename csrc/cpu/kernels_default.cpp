// Baseline-ISA build of the CPU kernels (SSE2 on x86-64, NEON on arm64): what every CPU runs
// when the wider builds are unavailable or ATEN_CPU_CAPABILITY=default asks for it.
#include "kernels_prelude.h"

#define CPU_CAPABILITY DEFAULT
#include "kernels_impl.h"

namespace robust_lightning::cpu {
const KernelTable* kernels_DEFAULT() {
  return DEFAULT::kernel_table("DEFAULT");
}
} // namespace robust_lightning::cpu

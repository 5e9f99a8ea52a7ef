// CPU kernels of the fused attack ops, compiled once per instruction set (see kernels_impl.h)
// and chosen at run time the way ATen chooses its own CPU kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include "../attack_ops.h"

namespace robust_lightning::cpu {

struct KernelTable {
  const char* isa;  // "DEFAULT", "AVX2" or "AVX512"
  void (*linf_step)(const StepBuffers& buffers);
  void (*l2_step)(const StepBuffers& buffers);
  // `in` and `out` are contiguous (B, C, H, W) tensors of the same dtype.
  void (*laplacian_sharpen)(const at::Tensor& in, const at::Tensor& out, double strength);
};

// One table per translation unit. The AVX2/AVX512 ones return nullptr when the compiler or
// the target architecture cannot build them.
const KernelTable* kernels_DEFAULT();
const KernelTable* kernels_AVX2();
const KernelTable* kernels_AVX512();

// The widest table this CPU (and ATEN_CPU_CAPABILITY, which torch honours) allows.
const KernelTable& active_kernels();

} // namespace robust_lightning::cpu

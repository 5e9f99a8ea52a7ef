// Device-independent host code shared by the CPU and CUDA kernels of the fused attack ops.
//
// Every device registers its kernels for the same schemas (see ops.cpp). What differs between
// devices is only the inner loop, so argument validation, the layout policy (when to run on the
// caller's memory directly and when to go through a contiguous buffer) and the functional
// variants used by torch.compile live here once, and a device supplies a launcher that sees
// nothing but "rows": B samples of `row_numel` elements each, stored back to back.
#pragma once

#include <ATen/core/Tensor.h>

namespace robust_lightning {

// The per-sample ops need sample b's elements to be one contiguous run of memory. A tensor
// qualifies when it is non-overlapping and dense and the batch dimension is outermost in
// memory. That covers contiguous and channels_last inputs without a copy; the order of the
// elements inside a sample is irrelevant for these ops as long as every operand uses the same
// one, which `StepBuffers` guarantees by giving all operands identical strides.
bool rows_are_dense(const at::Tensor& t);

// Operands of one fused step, all with the same sizes, dtype, device and strides, laid out as
// rows (see rows_are_dense). `out` may alias `x` (the in-place op) or be fresh memory (the
// functional op); the kernels read element i of every input before they write element i of
// `out`, so full aliasing is safe.
struct StepBuffers {
  at::Tensor x;      // current adversarial batch (read)
  at::Tensor grad;   // loss gradient (read)
  at::Tensor clean;  // clean batch the perturbation is measured from (read)
  at::Tensor out;    // result (written)
  at::Tensor eps;    // radius in the opmath dtype on the same device: numel 1, or one per sample
  int64_t batch;     // B
  int64_t row_numel; // elements per sample
  double alpha;
  double lo;
  double hi;
};

using StepLauncher = void (*)(const StepBuffers&);

// Shared front ends of the step ops. `op_name` prefixes every error message.
at::Tensor& step_inplace(
    const char* op_name,
    StepLauncher launch,
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi);

at::Tensor step_functional(
    const char* op_name,
    StepLauncher launch,
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi);

// Validates `x` for laplacian_sharpen and returns it as a contiguous (B, C, H, W) tensor.
at::Tensor sharpen_input(const at::Tensor& x);

} // namespace robust_lightning

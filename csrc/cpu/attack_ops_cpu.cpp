// CPU registrations of the robust_lightning ops, and the run-time choice of instruction set.
#include <string>

#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include "../attack_ops.h"
#include "kernels.h"

namespace robust_lightning::cpu {

const KernelTable& active_kernels() {
  // torch has already probed the CPU (and the OS's support for saving AVX512 state) and
  // applied ATEN_CPU_CAPABILITY; following its answer keeps our kernels on the same ISA as
  // torch's own, so a user who forces `default` to debug gets baseline code here too.
  static const KernelTable& table = []() -> const KernelTable& {
    const std::string capability = at::get_cpu_capability();
    const bool avx512 = capability.rfind("AVX512", 0) == 0;
    const bool avx2 = avx512 || capability.rfind("AVX2", 0) == 0;
    if (avx512 && kernels_AVX512() != nullptr) {
      return *kernels_AVX512();
    }
    if (avx2 && kernels_AVX2() != nullptr) {
      return *kernels_AVX2();
    }
    return *kernels_DEFAULT();
  }();
  return table;
}

namespace {

void linf_launch(const StepBuffers& buffers) {
  active_kernels().linf_step(buffers);
}

void l2_launch(const StepBuffers& buffers) {
  active_kernels().l2_step(buffers);
}

at::Tensor& linf_step_inplace_cpu(
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_inplace("linf_step_", &linf_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor& l2_step_inplace_cpu(
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_inplace("l2_step_", &l2_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor linf_step_cpu(
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_functional("linf_step", &linf_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor l2_step_cpu(
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_functional("l2_step", &l2_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor laplacian_sharpen_cpu(const at::Tensor& x, double strength) {
  const at::Tensor in = sharpen_input(x);
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  if (out.numel() > 0) {
    active_kernels().laplacian_sharpen(in, out, strength);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(robust_lightning, CPU, m) {
  m.impl("linf_step_", TORCH_FN(linf_step_inplace_cpu));
  m.impl("l2_step_", TORCH_FN(l2_step_inplace_cpu));
  m.impl("linf_step", TORCH_FN(linf_step_cpu));
  m.impl("l2_step", TORCH_FN(l2_step_cpu));
  m.impl("laplacian_sharpen", TORCH_FN(laplacian_sharpen_cpu));
}

} // namespace robust_lightning::cpu

#include "attack_ops.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

namespace robust_lightning {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

at::ScalarType opmath_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Bad arguments raise ValueError (shape, device) or TypeError (dtype) in Python, naming the
// argument; robust_lightning/ops.py raises the same errors before dispatching to either
// implementation, so both backends reject the same inputs the same way.
void check_step_inputs(
    const char* op,
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps) {
  TORCH_CHECK_VALUE(
      x_adv.dim() >= 1,
      op, ": x_adv must have a leading batch dimension, got a 0-dim tensor");
  TORCH_CHECK_TYPE(
      is_supported_dtype(x_adv.scalar_type()),
      op, ": x_adv must be float32, float64, bfloat16 or float16, got ", x_adv.scalar_type());
  TORCH_CHECK_VALUE(
      grad.sizes() == x_adv.sizes(),
      op, ": grad must have the shape of x_adv ", x_adv.sizes(), ", got ", grad.sizes());
  TORCH_CHECK_VALUE(
      x_clean.sizes() == x_adv.sizes(),
      op, ": x_clean must have the shape of x_adv ", x_adv.sizes(), ", got ", x_clean.sizes());
  // One dtype for the three big operands keeps the kernels to four instantiations; the attack
  // core always produces grad in x_adv's dtype, and silently rounding a wider x_clean would
  // break the "round once" contract.
  TORCH_CHECK_TYPE(
      grad.scalar_type() == x_adv.scalar_type(),
      op, ": grad must have the dtype of x_adv (", x_adv.scalar_type(), "), got ",
      grad.scalar_type());
  TORCH_CHECK_TYPE(
      x_clean.scalar_type() == x_adv.scalar_type(),
      op, ": x_clean must have the dtype of x_adv (", x_adv.scalar_type(), "), got ",
      x_clean.scalar_type());
  TORCH_CHECK_VALUE(
      grad.device() == x_adv.device(),
      op, ": grad must be on the device of x_adv (", x_adv.device(), "), got ", grad.device());
  TORCH_CHECK_VALUE(
      x_clean.device() == x_adv.device(),
      op, ": x_clean must be on the device of x_adv (", x_adv.device(), "), got ",
      x_clean.device());
  // A 0-dim CPU eps is accepted with CUDA inputs, like a CPU scalar in any other torch op.
  TORCH_CHECK_VALUE(
      eps.device() == x_adv.device() || (eps.is_cpu() && eps.dim() == 0),
      op, ": eps must be on the device of x_adv (", x_adv.device(), ") or be a 0-dim CPU "
      "tensor, got a ", eps.dim(), "-dim tensor on ", eps.device());
  TORCH_CHECK_TYPE(
      at::isFloatingType(eps.scalar_type()),
      op, ": eps must be a floating-point tensor, got ", eps.scalar_type());
  const int64_t batch = x_adv.size(0);
  TORCH_CHECK_VALUE(
      eps.numel() == 1 || (eps.dim() == 1 && eps.size(0) == batch),
      op, ": eps must be a scalar tensor or have shape (B,) = (", batch, ",), got shape ",
      eps.sizes());
}

// Strides equal on every dimension that has more than one element; the stride of a size-1
// dimension is meaningless and differs between equally laid out tensors.
bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) {
      return false;
    }
  }
  return true;
}

// `t` itself when it already shares `ref`'s layout, else a copy laid out like `ref`.
at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& ref) {
  if (same_layout(t, ref)) {
    return t;
  }
  // `ref` is dense, so empty_like reproduces its strides exactly.
  return at::empty_like(ref).copy_(t);
}

StepBuffers make_buffers(
    const at::Tensor& x,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& out,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  const int64_t batch = out.size(0);
  StepBuffers buffers;
  buffers.out = out;
  buffers.x = with_layout_of(x, out);
  buffers.grad = with_layout_of(grad, out);
  buffers.clean = with_layout_of(x_clean, out);
  // Cast eps to opmath first, as the reference does: a float64 eps with float32 images is
  // rounded to float32 before `x - eps`, not after. This is a no-op for the common case.
  buffers.eps =
      eps.to(out.device(), opmath_dtype(out.scalar_type())).reshape({eps.numel()}).contiguous();
  buffers.batch = batch;
  buffers.row_numel = batch == 0 ? 0 : out.numel() / batch;
  buffers.alpha = alpha;
  buffers.lo = lo;
  buffers.hi = hi;
  return buffers;
}

} // namespace

bool rows_are_dense(const at::Tensor& t) {
  if (!t.is_non_overlapping_and_dense()) {
    return false;
  }
  const int64_t batch = t.size(0);
  return batch <= 1 || t.stride(0) == t.numel() / batch;
}

at::Tensor& step_inplace(
    const char* op_name,
    StepLauncher launch,
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  check_step_inputs(op_name, x_adv, grad, x_clean, eps);
  if (x_adv.numel() == 0) {
    return x_adv;
  }
  // Writing through an expanded view, or into memory that a shifted input still has to read,
  // would give order-dependent results.
  at::assert_no_internal_overlap(x_adv);
  at::assert_no_partial_overlap(x_adv, grad);
  at::assert_no_partial_overlap(x_adv, x_clean);

  if (rows_are_dense(x_adv)) {
    // Fast path (contiguous or channels_last): update the caller's memory directly.
    launch(make_buffers(x_adv, grad, x_clean, x_adv, eps, alpha, lo, hi));
  } else {
    // A strided view: work on a contiguous copy, then write it back so x_adv is still
    // updated in place (its storage and strides are never replaced).
    at::Tensor work = x_adv.contiguous();
    launch(make_buffers(work, grad, x_clean, work, eps, alpha, lo, hi));
    x_adv.copy_(work);
  }
  return x_adv;
}

at::Tensor step_functional(
    const char* op_name,
    StepLauncher launch,
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  check_step_inputs(op_name, x_adv, grad, x_clean, eps);
  // The fake kernel promises empty_like(x_adv) strides; keep that promise on every path.
  at::Tensor out = at::empty_like(x_adv);
  if (out.numel() == 0) {
    return out;
  }
  if (rows_are_dense(out)) {
    launch(make_buffers(x_adv, grad, x_clean, out, eps, alpha, lo, hi));
  } else {
    at::Tensor work = at::empty(x_adv.sizes(), x_adv.options());
    launch(make_buffers(x_adv, grad, x_clean, work, eps, alpha, lo, hi));
    out.copy_(work);
  }
  return out;
}

at::Tensor sharpen_input(const at::Tensor& x) {
  TORCH_CHECK_VALUE(
      x.dim() == 4,
      "laplacian_sharpen: x must be a (B, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK_TYPE(
      is_supported_dtype(x.scalar_type()),
      "laplacian_sharpen: x must be float32, float64, bfloat16 or float16, got ",
      x.scalar_type());
  return x.contiguous();
}

} // namespace robust_lightning

// Operator schemas of the `robust_lightning` namespace and the device-independent kernels.
//
// Device kernels live in cpu/ and cuda/; fake (meta) kernels and the autograd formula of
// laplacian_sharpen are registered from Python in robust_lightning/ops.py, next to the
// reference implementations they must agree with.
#include <Python.h>

#include <ATen/FunctionalTensorWrapper.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "cpu/kernels.h"

#if defined(ROBUST_LIGHTNING_WITH_CUDA)
constexpr long kWithCuda = 1;
#else
constexpr long kWithCuda = 0;
#endif

extern "C" {
// `import robust_lightning._C` loads this shared object, which runs the static registrations
// below; the ops are then reached through torch.ops.robust_lightning. The module only carries
// two facts about the build: `with_cuda` (1 if CUDA kernels were compiled in) and `cpu_isa`
// (the instruction set the CPU kernels run with on this machine). It uses the limited Python
// API only, so one build serves every CPython >= 3.10.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "Fused attack kernels; importing registers torch.ops.robust_lightning.*",
      -1,
      nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) {
    return nullptr;
  }
  if (PyModule_AddIntConstant(module, "with_cuda", kWithCuda) != 0 ||
      PyModule_AddStringConstant(
          module, "cpu_isa", robust_lightning::cpu::active_kernels().isa) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

namespace robust_lightning {
namespace {

using StepFn = at::Tensor(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
    double);
using StepInplaceFn = at::Tensor&(
    at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
    double);

at::Tensor unwrap_functional(const at::Tensor& t) {
  namespace fimpl = at::functionalization::impl;
  if (!fimpl::isFunctionalTensor(t)) {
    return t;
  }
  fimpl::sync(t);
  return fimpl::from_functional_tensor(t);
}

// The typed dispatcher handles of one step op and its functional twin.
struct StepOpPair {
  const char* inplace_name;
  c10::TypedOperatorHandle<StepInplaceFn> inplace;
  c10::TypedOperatorHandle<StepFn> functional;
};

StepOpPair find_step_ops(const char* inplace_name, const char* functional_name) {
  auto& dispatcher = c10::Dispatcher::singleton();
  return StepOpPair{
      inplace_name,
      dispatcher.findSchemaOrThrow(inplace_name, "").typed<StepInplaceFn>(),
      dispatcher.findSchemaOrThrow(functional_name, "").typed<StepFn>()};
}

// Functionalization (what torch.compile / AOTAutograd run on) cannot handle a custom op whose
// output aliases a mutated input on its own, so each in-place step op is rewritten into its
// functional twin plus a write-back, exactly like ATen's generated kernels for `add_`.
at::Tensor& functionalize_step(
    const StepOpPair& ops,
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  namespace fimpl = at::functionalization::impl;
  at::Tensor grad_ = unwrap_functional(grad);
  at::Tensor clean_ = unwrap_functional(x_clean);
  at::Tensor eps_ = unwrap_functional(eps);

  if (!fimpl::isFunctionalTensor(x_adv)) {
    TORCH_CHECK(
        !fimpl::isFunctionalTensor(grad) && !fimpl::isFunctionalTensor(x_clean) &&
            !fimpl::isFunctionalTensor(eps),
        ops.inplace_name,
        ": mutating a non-functional x_adv with functional inputs is not allowed");
    at::AutoDispatchSkipFunctionalize guard;
    ops.inplace.call(x_adv, grad_, clean_, eps_, alpha, lo, hi);
    return x_adv;
  }

  at::Tensor x_ = unwrap_functional(x_adv);
  at::Tensor result;
  {
    at::AutoDispatchSkipFunctionalize guard;
    result = ops.functional.call(x_, grad_, clean_, eps_, alpha, lo, hi);
  }
  fimpl::replace_(x_adv, result);
  fimpl::commit_update(x_adv);
  fimpl::sync(x_adv);
  return x_adv;
}

at::Tensor& linf_step_functionalize(
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  static const StepOpPair ops =
      find_step_ops("robust_lightning::linf_step_", "robust_lightning::linf_step");
  return functionalize_step(ops, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor& l2_step_functionalize(
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  static const StepOpPair ops =
      find_step_ops("robust_lightning::l2_step_", "robust_lightning::l2_step");
  return functionalize_step(ops, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

} // namespace

TORCH_LIBRARY(robust_lightning, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  // In-place steps: what the attack core calls. eps is a 0-dim tensor or one radius per
  // sample (B,); alpha, lo and hi are rounded to the opmath type like Python scalars are.
  m.def(
      "linf_step_(Tensor(a!) x_adv, Tensor grad, Tensor x_clean, Tensor eps, float alpha, "
      "float lo, float hi) -> Tensor(a!)",
      tags);
  m.def(
      "l2_step_(Tensor(a!) x_adv, Tensor grad, Tensor x_clean, Tensor eps, float alpha, "
      "float lo, float hi) -> Tensor(a!)",
      tags);
  // Functional twins: the same arithmetic into a new tensor. Functionalization rewrites the
  // in-place ops into these (see functionalize_step); they are usable directly as well.
  m.def(
      "linf_step(Tensor x_adv, Tensor grad, Tensor x_clean, Tensor eps, float alpha, "
      "float lo, float hi) -> Tensor",
      tags);
  m.def(
      "l2_step(Tensor x_adv, Tensor grad, Tensor x_clean, Tensor eps, float alpha, "
      "float lo, float hi) -> Tensor",
      tags);
  m.def("laplacian_sharpen(Tensor x, float strength) -> Tensor", tags);
}

TORCH_LIBRARY_IMPL(robust_lightning, Functionalize, m) {
  m.impl("linf_step_", TORCH_FN(linf_step_functionalize));
  m.impl("l2_step_", TORCH_FN(l2_step_functionalize));
}

// The step ops are projections of sign/normalised gradients: they have no useful derivative.
// Registering the not-implemented fallbacks makes a backward through them fail loudly instead
// of silently returning no gradient, and keeps autograd's version counter correct for the
// in-place ops (the ADInplaceOrView kernel bumps it).
TORCH_LIBRARY_IMPL(robust_lightning, Autograd, m) {
  m.impl("linf_step_", torch::autograd::autogradNotImplementedFallback());
  m.impl("l2_step_", torch::autograd::autogradNotImplementedFallback());
  m.impl("linf_step", torch::autograd::autogradNotImplementedFallback());
  m.impl("l2_step", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(robust_lightning, ADInplaceOrView, m) {
  m.impl("linf_step_", torch::autograd::autogradNotImplementedInplaceOrViewFallback());
  m.impl("l2_step_", torch::autograd::autogradNotImplementedInplaceOrViewFallback());
}

} // namespace robust_lightning

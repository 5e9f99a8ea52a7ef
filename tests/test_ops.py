"""Fused attack ops: the compiled kernels (csrc/) against the pure-PyTorch reference (ops.py).

Native tests skip with a reason when ``robust_lightning._C`` is not importable, except under
``ROBUST_LIGHTNING_REQUIRE_NATIVE=1`` (set by ``make test``), where a missing or broken build
fails instead of passing silently on the reference fallback.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from robust_lightning import ops

NATIVE = ops._C is not None
REQUIRE_NATIVE = os.environ.get("ROBUST_LIGHTNING_REQUIRE_NATIVE", "") == "1"
EXPECT_CUDA_KERNELS = os.environ.get("ROBUST_LIGHTNING_EXPECT_CUDA_KERNELS", "") == "1"
OP_NAMES = ("linf_step_", "l2_step_", "linf_step", "l2_step", "laplacian_sharpen")
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
ALPHA, LO, HI = 2 / 255, 0.0, 1.0

native_only = pytest.mark.skipif(
    not NATIVE,
    reason=f"robust_lightning._C is not importable ({ops._C_IMPORT_ERROR}); build it with "
    "`make test` or `pip install -e . --no-build-isolation`",
)


def _has_cuda_kernels() -> bool:
    return NATIVE and torch._C._dispatch_has_kernel_for_dispatch_key(
        "robust_lightning::linf_step_", "CUDA"
    )


DEVICES = (
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available() or not (_has_cuda_kernels() or EXPECT_CUDA_KERNELS),
            reason="no CUDA device, or the extension was built without CUDA kernels",
        ),
    ),
)


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch):
    """Every test starts from the default (unforced) backend choice."""
    monkeypatch.delenv(ops.BACKEND_ENV, raising=False)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bit patterns, for bitwise comparison."""
    int_type = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(int_type)


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    actual, expected = actual.cpu(), expected.cpu()
    mismatch = _bits(actual) != _bits(expected)
    if mismatch.any():
        idx = mismatch.nonzero()[0].tolist()
        raise AssertionError(
            f"{int(mismatch.sum())} of {actual.numel()} elements differ; first at {idx}: "
            f"{actual[tuple(idx)].item()!r} vs {expected[tuple(idx)].item()!r}"
        )


def assert_l2_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Tight tolerance for the L2 step: its norms are summed in a different order.

    fp32/fp64: a few ulp of values in [0, 1]. fp16/bf16: the one rounding to the storage type
    may land on the neighbouring value, so up to 2 ulp relative.
    """
    tolerances = {
        torch.float32: (1e-6, 1e-6),
        torch.float64: (1e-13, 1e-13),
        torch.bfloat16: (2 * torch.finfo(torch.bfloat16).eps, 1e-5),
        torch.float16: (2 * torch.finfo(torch.float16).eps, 1e-5),
    }
    rtol, atol = tolerances[actual.dtype]
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values as ``t`` in the requested memory layout (a view where that is the point)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        # Dense, but the two last dims swapped in memory.
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "batch_inner":
        # Dense with the batch dimension NOT outermost: samples are interleaved in memory.
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "strided":
        # A non-dense view: every other element of a twice-as-wide buffer.
        base = torch.full((*t.shape[:-1], 2 * t.shape[-1]), -7.0, dtype=t.dtype, device=t.device)
        view = base[..., ::2]
        view.copy_(t)
        return view
    raise ValueError(layout)


def make_step_inputs(
    shape, dtype, device, eps_kind="scalar", seed=0, eps_value=8 / 255
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_adv, grad, x_clean, eps)`` with perturbations partly outside the ball."""
    g = torch.Generator().manual_seed(seed)
    x_clean = torch.rand(shape, generator=g, dtype=torch.float64)
    noise = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * 3 * eps_value
    x_adv = (x_clean + noise).clamp(0, 1)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    grad.view(-1)[::5] = 0.0  # sign(0) = 0 must be handled
    batch = shape[0]
    if eps_kind == "scalar":
        eps = torch.tensor(eps_value, dtype=torch.float64)
    elif eps_kind == "zero":
        eps = torch.tensor(0.0, dtype=torch.float64)
    elif eps_kind == "per_sample":
        eps = torch.rand(batch, generator=g, dtype=torch.float64) * 2 * eps_value
        eps[0] = 0.0  # a zero radius among non-zero ones
    else:
        raise ValueError(eps_kind)
    to = {"device": device, "dtype": dtype}
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    return x_adv.to(**to), grad.to(**to), x_clean.to(**to), eps.to(device=device, dtype=opmath)


# ---------------------------------------------------------------------------------------------
# The build itself
# ---------------------------------------------------------------------------------------------

def test_extension_loaded_when_required():
    if not REQUIRE_NATIVE:
        pytest.skip("ROBUST_LIGHTNING_REQUIRE_NATIVE is not 1")
    assert NATIVE, f"robust_lightning._C failed to import: {ops._C_IMPORT_ERROR}"
    assert ops.backend() == "native"
    for name in OP_NAMES:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"robust_lightning::{name}", "CPU")


def test_cuda_kernels_compiled_when_expected():
    if not EXPECT_CUDA_KERNELS:
        pytest.skip("ROBUST_LIGHTNING_EXPECT_CUDA_KERNELS is not 1")
    assert NATIVE, f"robust_lightning._C failed to import: {ops._C_IMPORT_ERROR}"
    assert ops._C.with_cuda == 1, "the extension was built without its CUDA kernels"
    for name in OP_NAMES:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(
            f"robust_lightning::{name}", "CUDA"
        ), f"robust_lightning::{name} has no CUDA kernel"


@native_only
def test_registrations():
    for name in OP_NAMES:
        qualified = f"robust_lightning::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU")
        # The fake kernel also serves meta tensors.
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "Meta")
        assert torch.Tag.pt2_compliant_tag in getattr(torch.ops.robust_lightning, name).default.tags
    for name in ("linf_step_", "l2_step_"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(
            f"robust_lightning::{name}", "Functionalize"
        )
    assert torch._C._dispatch_has_kernel_for_dispatch_key(
        "robust_lightning::laplacian_sharpen", "Autograd"
    )
    assert ops._C.with_cuda == int(_has_cuda_kernels())


@native_only
def test_cpu_kernels_follow_torch_cpu_capability():
    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine() in ("x86_64", "AMD64") and capability in ("AVX2", "AVX512"):
        assert ops._C.cpu_isa in (capability, "DEFAULT")
    else:
        assert ops._C.cpu_isa == "DEFAULT"


_ISA_CHECK = textwrap.dedent(
    """
    import torch
    from robust_lightning import ops
    print(ops._C.cpu_isa)
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for shape in ((3, 5, 7), (2, 3, 33, 35), (1, 20000), (9, 2, 3, 4)):
            x = torch.rand(shape, generator=gen).to(dtype)
            g = torch.randn(shape, generator=gen).to(dtype)
            a = (x.float() + 0.05 * torch.randn(shape, generator=gen)).clamp(0, 1).to(dtype)
            for eps in (torch.tensor(0.03), torch.rand(shape[0], generator=gen) * 0.1):
                eps = eps.to(torch.float64 if dtype == torch.float64 else torch.float32)
                for native, reference in ((torch.ops.robust_lightning.linf_step_,
                                           ops._reference_linf_step_),
                                          (torch.ops.robust_lightning.l2_step_,
                                           ops._reference_l2_step_)):
                    n, r = a.clone(), a.clone()
                    native(n, g, x, eps, 0.01, 0.0, 1.0)
                    reference(r, g, x, eps, 0.01, 0.0, 1.0)
                    tol = 2 * torch.finfo(dtype).eps
                    torch.testing.assert_close(n, r, rtol=tol, atol=1e-5)
                    if native is torch.ops.robust_lightning.linf_step_:
                        assert torch.equal(n, r), (dtype, shape)
            if x.dim() == 4:
                assert torch.equal(torch.ops.robust_lightning.laplacian_sharpen(x, 0.4),
                                   ops._reference_laplacian_sharpen(x, 0.4))
    print("OK")
    """
)


@native_only
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 ISA variants")
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_each_cpu_isa_build_matches_reference(capability):
    """The kernels are compiled per ISA and picked at run time; check the narrower builds
    too (the in-process tests only see the widest one this CPU allows)."""
    order = ["DEFAULT", "AVX2", "AVX512"]
    if order.index(capability.upper()) > order.index(torch.backends.cpu.get_cpu_capability()):
        pytest.skip(f"this CPU does not support {capability}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="2")
    env.pop(ops.BACKEND_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-c", _ISA_CHECK],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    isa, status = proc.stdout.split()[-2:]
    assert status == "OK"
    assert isa in (capability.upper(), "DEFAULT")
    if capability == "default":
        assert isa == "DEFAULT"


@native_only
@pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("objdump") is None,
    reason="needs objdump on x86-64",
)
def test_wide_isa_code_is_confined_to_capability_namespaces():
    """AVX2/AVX512 instructions may only appear in the per-ISA kernels (namespaces AVX2 /
    AVX512), which run only after the CPU was checked: anything else would crash older CPUs
    through the library's baseline code paths (see csrc/cpu/kernels_prelude.h)."""
    proc = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", ops._C.__file__],
        capture_output=True, text=True, check=True,
    )
    wide = re.compile(r"%[yz]mm|\t(v[a-z]|shlx|shrx|sarx|andn|bzhi|pdep|pext|rorx|mulx|kmov)")
    offenders, function = set(), None
    for line in proc.stdout.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
        elif function and wide.search(line) and not re.search(r"::AVX(2|512)::", function):
            offenders.add(function)
    assert not offenders, sorted(offenders)[:10]


# ---------------------------------------------------------------------------------------------
# Numerics: native == reference
# ---------------------------------------------------------------------------------------------

STEP_SHAPES = [
    (1, 3, 8, 8),  # batch 1
    (5, 3, 7, 9),  # row length not a multiple of any vector width
    (256, 3, 32, 32),  # CIFAR-sized batch
    (2, 3, 100, 100),  # few large samples: the L2 kernel's intra-sample schedule
    (6, 1000),  # 2-D inputs
    (33,),  # one element per sample
]


@native_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=str)
@pytest.mark.parametrize("eps_kind", ["scalar", "per_sample", "zero"])
def test_linf_step_matches_reference_bitwise(device, dtype, shape, eps_kind):
    # Every operation is an exactly rounded opmath operation in the reference's order and the
    # result is rounded once, so all four dtypes agree bit for bit, not just fp32/fp64.
    x_adv, grad, x_clean, eps = make_step_inputs(shape, dtype, device, eps_kind)
    expected = ops._reference_linf_step_(x_adv.clone(), grad, x_clean, eps, ALPHA, LO, HI)
    out = ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    assert out is x_adv
    assert_bitwise_equal(x_adv, expected)
    if eps_kind == "zero":
        assert_bitwise_equal(x_adv, x_clean)


@native_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=str)
@pytest.mark.parametrize("eps_kind", ["scalar", "per_sample", "zero"])
def test_l2_step_matches_reference(device, dtype, shape, eps_kind):
    x_adv, grad, x_clean, eps = make_step_inputs(shape, dtype, device, eps_kind, eps_value=0.5)
    expected = ops._reference_l2_step_(x_adv.clone(), grad, x_clean, eps, 0.1, LO, HI)
    out = ops.l2_step_(x_adv, grad, x_clean, eps, 0.1, LO, HI)
    assert out is x_adv
    assert_l2_close(x_adv, expected)
    if eps_kind == "zero":
        assert_l2_close(x_adv, x_clean)


LAYOUTS = ["channels_last", "transposed", "batch_inner", "strided"]


@native_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("which", ["x_adv", "grad", "x_clean", "all"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_step_non_contiguous_inputs(device, dtype, layout, which, norm):
    """Any operand may be strided or channels_last; x_adv is still updated in place."""
    x_adv, grad, x_clean, eps = make_step_inputs((4, 3, 10, 12), dtype, device, "per_sample")
    reference = ops._reference_linf_step_ if norm == "linf" else ops._reference_l2_step_
    native = ops.linf_step_ if norm == "linf" else ops.l2_step_
    expected = reference(x_adv.clone(), grad, x_clean, eps, ALPHA, LO, HI)
    if which in ("x_adv", "all"):
        x_adv = _layout(x_adv, layout)
    if which in ("grad", "all"):
        grad = _layout(grad, layout)
    if which in ("x_clean", "all"):
        x_clean = _layout(x_clean, layout)
    strides, data_ptr = x_adv.stride(), x_adv.data_ptr()
    out = native(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    assert out is x_adv and x_adv.stride() == strides and x_adv.data_ptr() == data_ptr
    if norm == "linf":
        assert_bitwise_equal(x_adv, expected)
    else:
        assert_l2_close(x_adv, expected)
    if layout == "strided" and which in ("x_adv", "all"):
        # The gaps of the underlying buffer are untouched.
        base = x_adv._base
        assert bool((base[..., 1::2] == -7.0).all())


@native_only
@pytest.mark.parametrize("device", DEVICES)
def test_eps_dtype_and_python_float(device):
    """eps may come in any floating dtype (it is rounded to opmath first, like the
    reference) or as a Python float through the ops wrapper."""
    x_adv, grad, x_clean, _ = make_step_inputs((3, 3, 8, 8), torch.float32, device)
    for eps in (
        torch.tensor(8 / 255, dtype=torch.float64, device=device),
        torch.tensor(8 / 255, dtype=torch.bfloat16, device=device),
        torch.full((3,), 8 / 255, dtype=torch.float16, device=device),
        torch.tensor([8 / 255], device=device),
        8 / 255,
    ):
        eps_t = eps if isinstance(eps, torch.Tensor) else torch.tensor(eps)
        expected = ops._reference_linf_step_(
            x_adv.clone(), grad, x_clean, eps_t.to(device), ALPHA, LO, HI
        )
        assert_bitwise_equal(ops.linf_step_(x_adv.clone(), grad, x_clean, eps, ALPHA, LO, HI),
                             expected)


@native_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_l2_step_zero_gradient_and_bounds(dtype):
    """An all-zero gradient is divided by the norm floor, not by zero, and the result still
    respects both the ball and [lo, hi]."""
    x_adv, grad, x_clean, eps = make_step_inputs((4, 3, 6, 6), dtype, "cpu", eps_value=0.3)
    # The ball bound below holds when the clean point lies inside [lo, hi]: clamping onto a box
    # that contains x_clean never moves x_adv further from it.
    x_clean = x_clean.clamp(0.1, 0.9)
    grad[1] = 0
    expected = ops._reference_l2_step_(x_adv.clone(), grad, x_clean, eps, 0.2, 0.1, 0.9)
    ops.l2_step_(x_adv, grad, x_clean, eps, 0.2, 0.1, 0.9)
    assert torch.isfinite(x_adv.float()).all()
    assert_l2_close(x_adv, expected)
    # The bounds as the storage type rounds them (0.1 is below 0.1 in float16).
    lo, hi = (float(torch.tensor(b, dtype=torch.float64).to(dtype)) for b in (0.1, 0.9))
    assert float(x_adv.min()) >= lo and float(x_adv.max()) <= hi
    delta = (x_adv.double() - x_clean.double()).flatten(1).norm(dim=1)
    # In the ball up to the storage type's rounding of x_adv.
    slack = 4 * torch.finfo(dtype).eps * 8
    assert bool((delta <= 0.3 * (1 + 1e-6) + slack).all())


@native_only
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_step_results_do_not_depend_on_thread_count(norm):
    """Norm partial sums use fixed chunks, so the L2 result is bit-identical whatever the
    number of threads (and whichever of the two schedules that selects)."""
    x_adv, grad, x_clean, eps = make_step_inputs((6, 3, 100, 100), torch.float32, "cpu", eps_value=0.5)
    step = ops.linf_step_ if norm == "linf" else ops.l2_step_
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(step(x_adv.clone(), grad, x_clean, eps, 0.1, LO, HI))
    finally:
        torch.set_num_threads(threads)
    for result in results[1:]:
        assert_bitwise_equal(result, results[0])


SHARPEN_SHAPES = [(2, 3, 17, 19), (1, 1, 1, 1), (1, 2, 1, 5), (2, 1, 6, 1), (4, 3, 32, 32)]


@native_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHARPEN_SHAPES, ids=str)
@pytest.mark.parametrize("strength", [0.0, 0.5, -0.3])
def test_laplacian_sharpen_matches_reference_bitwise(device, dtype, shape, strength):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    out = ops.laplacian_sharpen(x, strength)
    assert out.is_contiguous() and out.dtype == dtype and out.shape == x.shape
    assert_bitwise_equal(out, ops._reference_laplacian_sharpen(x, strength))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@native_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided"])
def test_laplacian_sharpen_non_contiguous(device, layout):
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(2)).to(device)
    expected = ops._reference_laplacian_sharpen(x, 0.7)
    assert_bitwise_equal(ops.laplacian_sharpen(_layout(x, layout), 0.7), expected)


@native_only
def test_laplacian_sharpen_constant_image_unchanged():
    x = torch.full((1, 3, 5, 6), 0.25)
    assert_bitwise_equal(ops.laplacian_sharpen(x, 2.0), x)


@native_only
@pytest.mark.parametrize("device", DEVICES)
def test_laplacian_sharpen_gradient_matches_reference(device):
    """The native op's registered derivative equals autograd through the reference,
    including where the clip is active and at the replicate-padded borders."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 7, 8, generator=g, dtype=torch.float64).to(device)
    upstream = torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64).to(device)
    x_native = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    torch.autograd.backward(ops.laplacian_sharpen(x_native, 1.5), upstream)
    torch.autograd.backward(ops._reference_laplacian_sharpen(x_ref, 1.5), upstream)
    torch.testing.assert_close(x_native.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    # Away from the clip's kinks the derivative is smooth: check it numerically too.
    smooth = (0.4 + 0.2 * torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64)).to(device)
    assert torch.autograd.gradcheck(lambda t: ops.laplacian_sharpen(t, 0.1),
                                    (smooth.requires_grad_(True),))


@native_only
def test_step_ops_refuse_backward():
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float64, "cpu")
    x_adv = x_adv.requires_grad_(True)
    out = torch.ops.robust_lightning.linf_step(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    with pytest.raises(RuntimeError, match="not implemented"):
        out.sum().backward()


@native_only
def test_meta_tensors():
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "meta")
    assert ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI) is x_adv
    assert ops.l2_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI) is x_adv
    out = ops.laplacian_sharpen(x_adv.to(memory_format=torch.channels_last), 0.5)
    assert out.device.type == "meta" and out.shape == x_adv.shape and out.is_contiguous()


# ---------------------------------------------------------------------------------------------
# Input validation (messages name the argument)
# ---------------------------------------------------------------------------------------------

@native_only
@pytest.mark.parametrize("name", ["linf_step_", "l2_step_", "linf_step", "l2_step"])
def test_step_input_validation(name):
    op = getattr(torch.ops.robust_lightning, name)
    x_adv, grad, x_clean, eps = make_step_inputs((4, 3, 5, 5), torch.float32, "cpu")

    def call(**overrides):
        args = {"x_adv": x_adv.clone(), "grad": grad, "x_clean": x_clean, "eps": eps}
        args.update(overrides)
        return op(args["x_adv"], args["grad"], args["x_clean"], args["eps"], ALPHA, LO, HI)

    with pytest.raises(ValueError, match=rf"{name}: grad must have the shape of x_adv"):
        call(grad=grad[:3])
    with pytest.raises(ValueError, match=rf"{name}: x_clean must have the shape of x_adv"):
        call(x_clean=x_clean.flatten(1))
    with pytest.raises(TypeError, match=rf"{name}: grad must have the dtype of x_adv"):
        call(grad=grad.double())
    with pytest.raises(TypeError, match=rf"{name}: x_clean must have the dtype of x_adv"):
        call(x_clean=x_clean.half())
    with pytest.raises(TypeError, match=rf"{name}: x_adv must be float32, float64, bfloat16"):
        call(x_adv=(x_adv * 255).to(torch.uint8), grad=grad.to(torch.uint8),
             x_clean=x_clean.to(torch.uint8))
    with pytest.raises(ValueError, match=rf"{name}: eps must be a scalar tensor or have shape \(B,\)"):
        call(eps=torch.full((3,), 0.1))
    with pytest.raises(ValueError, match=rf"{name}: eps must be a scalar tensor or have shape \(B,\)"):
        call(eps=torch.full((4, 1), 0.1))
    with pytest.raises(TypeError, match=rf"{name}: eps must be a floating-point tensor"):
        call(eps=torch.tensor(1))
    with pytest.raises(ValueError, match=rf"{name}: x_adv must have a leading batch dimension"):
        call(x_adv=torch.tensor(0.5), grad=torch.tensor(0.1), x_clean=torch.tensor(0.5))


@native_only
def test_step_rejects_self_overlapping_output():
    x_adv = torch.rand(1, 3, 4, 4).expand(2, 3, 4, 4)
    grad, x_clean = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match="single memory location"):
        torch.ops.robust_lightning.linf_step_(x_adv, grad, x_clean, torch.tensor(0.1), ALPHA, LO, HI)


@native_only
@pytest.mark.skipif(not torch.cuda.is_available() or not _has_cuda_kernels(), reason="needs CUDA")
def test_step_device_validation():
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cuda")
    with pytest.raises(ValueError, match="linf_step_: x_clean must be on the device of x_adv"):
        torch.ops.robust_lightning.linf_step_(x_adv, grad, x_clean.cpu(), eps, ALPHA, LO, HI)
    with pytest.raises(ValueError, match="linf_step_: eps must be on the device of x_adv"):
        torch.ops.robust_lightning.linf_step_(x_adv, grad, x_clean, eps.cpu().expand(2), ALPHA, LO, HI)
    # A 0-dim CPU eps is accepted, as CPU scalars are by torch's own ops.
    expected = ops._reference_linf_step_(x_adv.clone(), grad, x_clean, eps, ALPHA, LO, HI)
    torch.ops.robust_lightning.linf_step_(x_adv, grad, x_clean, eps.cpu(), ALPHA, LO, HI)
    assert_bitwise_equal(x_adv, expected)


@native_only
def test_laplacian_sharpen_input_validation():
    with pytest.raises(ValueError, match=r"laplacian_sharpen: x must be a \(B, C, H, W\) tensor"):
        torch.ops.robust_lightning.laplacian_sharpen(torch.rand(3, 8, 8), 0.5)
    with pytest.raises(TypeError, match="laplacian_sharpen: x must be float32"):
        torch.ops.robust_lightning.laplacian_sharpen(torch.zeros(1, 1, 4, 4, dtype=torch.int32), 0.5)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_ops_wrappers_validate_for_both_backends(backend, monkeypatch):
    """The Python entry points reject bad arguments before dispatch, with the same error
    types and messages whichever implementation runs; without this the reference would
    broadcast a mis-shaped grad or x_clean silently."""
    if backend == "native" and not NATIVE:
        pytest.skip("robust_lightning._C is not built")
    monkeypatch.setenv(ops.BACKEND_ENV, backend)
    x_adv, grad, x_clean, eps = make_step_inputs((4, 3, 5, 5), torch.float32, "cpu")
    for step in (ops.linf_step_, ops.l2_step_):
        name = step.__name__
        with pytest.raises(ValueError, match=rf"{name}: grad must have the shape of x_adv"):
            step(x_adv.clone(), grad[:1], x_clean, eps, ALPHA, LO, HI)  # would broadcast
        with pytest.raises(ValueError, match=rf"{name}: x_clean must have the shape of x_adv"):
            step(x_adv.clone(), grad, x_clean[:, :1], eps, ALPHA, LO, HI)
        with pytest.raises(TypeError, match=rf"{name}: x_clean must have the dtype of x_adv"):
            step(x_adv.clone(), grad, x_clean.double(), eps, ALPHA, LO, HI)
        with pytest.raises(TypeError, match=rf"{name}: x_adv must be float32"):
            step(x_adv.to(torch.int32), grad.to(torch.int32), x_clean.to(torch.int32), eps,
                 ALPHA, LO, HI)
        with pytest.raises(ValueError, match=rf"{name}: eps must be a scalar tensor or have shape"):
            step(x_adv.clone(), grad, x_clean, torch.full((5,), 0.1), ALPHA, LO, HI)
        with pytest.raises(TypeError, match=rf"{name}: eps must be a floating-point tensor"):
            step(x_adv.clone(), grad, x_clean, torch.tensor([1, 2, 3, 4]), ALPHA, LO, HI)
        with pytest.raises(TypeError, match="eps must be a Tensor or a float"):
            step(x_adv.clone(), grad, x_clean, "0.1", ALPHA, LO, HI)
        with pytest.raises(TypeError, match=rf"{name}: grad must be a Tensor"):
            step(x_adv.clone(), grad.numpy(), x_clean, eps, ALPHA, LO, HI)
    with pytest.raises(ValueError, match=r"laplacian_sharpen: x must be a \(B, C, H, W\) tensor"):
        ops.laplacian_sharpen(torch.rand(3, 8, 8), 0.5)
    with pytest.raises(TypeError, match="laplacian_sharpen: x must be float32"):
        ops.laplacian_sharpen(torch.zeros(1, 1, 4, 4, dtype=torch.int32), 0.5)


# ---------------------------------------------------------------------------------------------
# torch.library.opcheck and torch.compile
# ---------------------------------------------------------------------------------------------

def _opcheck_cases():
    cases = []
    for name in ("linf_step_", "l2_step_", "linf_step", "l2_step"):
        for eps_kind in ("scalar", "per_sample"):
            for dtype in (torch.float32, torch.bfloat16):
                cases.append(pytest.param(name, eps_kind, dtype, "contiguous",
                                          id=f"{name}-{eps_kind}-{dtype}"))
        cases.append(pytest.param(name, "scalar", torch.float32, "channels_last",
                                  id=f"{name}-channels_last"))
        cases.append(pytest.param(name, "scalar", torch.float32, "batch_inner",
                                  id=f"{name}-batch_inner"))
    return cases


@native_only
@pytest.mark.parametrize("name, eps_kind, dtype, layout", _opcheck_cases())
def test_opcheck_step_ops(name, eps_kind, dtype, layout):
    x_adv, grad, x_clean, eps = make_step_inputs((3, 3, 6, 5), dtype, "cpu", eps_kind)
    args = (_layout(x_adv, layout), grad, x_clean, eps, ALPHA, LO, HI)
    torch.library.opcheck(getattr(torch.ops.robust_lightning, name), args)


@native_only
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_laplacian_sharpen(requires_grad):
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64).requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.robust_lightning.laplacian_sharpen, (x, 0.5))
    torch.library.opcheck(
        torch.ops.robust_lightning.laplacian_sharpen,
        (x.detach().to(memory_format=torch.channels_last).requires_grad_(requires_grad), 0.5),
    )


def _pgd_linf_step(model, x_adv, x_clean, eps):
    """One PGD L-inf iteration with the input gradient taken in the same graph.

    Dynamo cannot trace ``requires_grad_()`` / ``torch.autograd.grad``, so the gradient comes
    from ``torch.func.grad``, which it captures as one graph.
    """
    target = torch.zeros(x_adv.shape[0], dtype=torch.long)

    def loss(z):
        return torch.nn.functional.cross_entropy(model(z), target, reduction="sum")

    grad = torch.func.grad(loss)(x_adv)
    return ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)


def _step_with_given_grad(x_adv, grad, x_clean, eps):
    out = ops.linf_step_(x_adv.clone(), grad, x_clean, eps, ALPHA, LO, HI)
    out = ops.l2_step_(out, grad, x_clean, eps * 10, 0.1, LO, HI)
    return ops.laplacian_sharpen(out, 0.2) * 1.0


@native_only
@pytest.mark.parametrize("eps_kind", ["scalar", "per_sample"])
def test_compile_fullgraph_aot_eager(eps_kind):
    """Dynamo + AOTAutograd (functionalization of the in-place ops, fake kernels) without
    Inductor's code generation, which keeps this test fast."""
    torch._dynamo.reset()
    x_adv, grad, x_clean, eps = make_step_inputs((4, 3, 8, 8), torch.float32, "cpu", eps_kind)
    compiled = torch.compile(_step_with_given_grad, fullgraph=True, backend="aot_eager")
    assert_bitwise_equal(compiled(x_adv, grad, x_clean, eps),
                         _step_with_given_grad(x_adv, grad, x_clean, eps))
    # A graph input mutated in place must come back mutated.
    step = torch.compile(lambda a, g, c, e: ops.linf_step_(a, g, c, e, ALPHA, LO, HI),
                         fullgraph=True, backend="aot_eager")
    expected = ops._reference_linf_step_(x_adv.clone(), grad, x_clean, eps, ALPHA, LO, HI)
    step(x_adv, grad, x_clean, eps)
    assert_bitwise_equal(x_adv, expected)


@native_only
@pytest.mark.slow
def test_compile_fullgraph_inductor_pgd_step():
    """A full PGD L-inf iteration (forward, input gradient, fused step) compiled by Inductor
    in one graph. Slow: Inductor generates and compiles C++ on first use (tens of seconds)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    # Frozen parameters, as the attack core's attack_mode() does: the step ops have no
    # derivative, so with trainable parameters AOTAutograd would try to build one.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    model.eval().requires_grad_(False)
    x_adv, _, x_clean, eps = make_step_inputs((4, 3, 8, 8), torch.float32, "cpu")
    expected = _pgd_linf_step(model, x_adv.clone(), x_clean, eps)
    compiled = torch.compile(_pgd_linf_step, fullgraph=True)
    x_compiled = x_adv.clone()
    result = compiled(model, x_compiled, x_clean, eps)
    # The in-place op mutated the graph input, and the compiled function returns it.
    assert result is x_compiled
    # Inductor may reorder the model's float arithmetic, which can flip the sign of a
    # near-zero gradient entry; the step itself is exact.
    assert float((result - expected).abs().max()) <= 2 * ALPHA + 1e-7
    assert float((result == expected).float().mean()) > 0.99


# ---------------------------------------------------------------------------------------------
# Backend selection (runs with or without the extension)
# ---------------------------------------------------------------------------------------------

def _count_reference_calls(monkeypatch) -> dict:
    calls = {"linf": 0}
    original = ops._reference_linf_step_

    def counting(*args):
        calls["linf"] += 1
        return original(*args)

    monkeypatch.setattr(ops, "_reference_linf_step_", counting)
    return calls


def test_env_forces_reference(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV, "reference")
    calls = _count_reference_calls(monkeypatch)
    assert ops.backend() == "reference"
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice never warns
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    assert calls["linf"] == 1


@native_only
def test_env_forces_native(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV, "native")
    calls = _count_reference_calls(monkeypatch)
    assert ops.backend() == "native"
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cpu")
    ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    assert calls["linf"] == 0


def test_env_invalid_value(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=rf"{ops.BACKEND_ENV}='cuda' is not a valid setting"):
        ops.backend()
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cpu")
    with pytest.raises(ValueError, match=ops.BACKEND_ENV):
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(ops, "_C", None)
    monkeypatch.setattr(ops, "_C_IMPORT_ERROR", "ImportError: simulated")
    monkeypatch.setattr(ops, "_warned", set())
    calls = _count_reference_calls(monkeypatch)
    assert ops.backend() == "reference"
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cpu")
    with pytest.warns(RuntimeWarning, match=r"pip install --no-build-isolation robust-lightning.*make build"):
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    assert calls["linf"] == 2


def test_missing_extension_with_native_forced_raises(monkeypatch):
    monkeypatch.setattr(ops, "_C", None)
    monkeypatch.setattr(ops, "_C_IMPORT_ERROR", "ImportError: simulated")
    monkeypatch.setenv(ops.BACKEND_ENV, "native")
    with pytest.raises(RuntimeError, match=r"native.*simulated.*--no-build-isolation.*make build"):
        ops.backend()
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="make build"):
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)


def test_import_without_extension_in_fresh_process():
    """The real import path: `_C` failing to import leaves a working, warning module."""
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["robust_lightning._C"] = None  # makes `from robust_lightning import _C` fail
        import torch
        from robust_lightning import ops
        assert ops._C is None and ops.backend() == "reference"
        x = torch.rand(2, 3, 4, 4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ops.linf_step_(x.clone(), torch.randn_like(x), x, torch.tensor(0.1), 0.01, 0.0, 1.0)
            ops.laplacian_sharpen(x, 0.5)
        assert len(caught) == 1 and "make build" in str(caught[0].message), caught
        print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != ops.BACKEND_ENV}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


@native_only
@pytest.mark.skipif(_has_cuda_kernels() or not torch.cuda.is_available(),
                    reason="needs a GPU and a CPU-only build")
def test_device_without_kernels_falls_back(monkeypatch):
    monkeypatch.setattr(ops, "_warned", set())
    x_adv, grad, x_clean, eps = make_step_inputs((2, 3, 4, 4), torch.float32, "cuda")
    with pytest.warns(RuntimeWarning, match="no cuda kernels"):
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)
    monkeypatch.setenv(ops.BACKEND_ENV, "native")
    with pytest.raises(RuntimeError, match="no cuda kernels"):
        ops.linf_step_(x_adv, grad, x_clean, eps, ALPHA, LO, HI)

"""Build of the ``robust_lightning._C`` extension (the fused attack ops in ``csrc/``).

Package metadata lives in ``pyproject.toml``; this file only adds the extension module, in
the layout of pytorch/extension-cpp. Build it with::

    pip install -e . --no-build-isolation --no-deps

``--no-build-isolation`` matters: the extension must be compiled against the torch that will
import it, so the build uses the environment's torch rather than a fresh copy.

CUDA kernels (``csrc/cuda/*.cu``) are compiled when

* a GPU is visible (``torch.cuda.is_available()``) or ``FORCE_CUDA=1`` is set, and
* ``ROBUST_LIGHTNING_NO_CUDA`` is unset (or ``0``), and
* torch itself is a CUDA build, and ``nvcc`` exists under ``CUDA_HOME`` (as torch finds it)
  and its ``major.minor`` equals ``torch.version.cuda`` -- a mismatched toolkit produces
  kernels that fail to load or, worse, link against the wrong runtime.

Otherwise a CPU-only extension is built and a one-line note says why. Other knobs:
``TORCH_CUDA_ARCH_LIST`` (e.g. ``"9.0"``; torch's default otherwise), ``MAX_JOBS`` (parallel
compile jobs), ``ROBUST_LIGHTNING_DEBUG=1`` (``-O0 -g``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _note(message: str) -> None:
    print(f"robust_lightning setup: {message}", file=sys.stderr, flush=True)


def _nvcc_version(nvcc: Path) -> str | None:
    """``major.minor`` of the toolkit's nvcc, or None if it cannot be run."""
    try:
        out = subprocess.run(
            [str(nvcc), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def cuda_build_decision() -> tuple[bool, str]:
    """Whether to compile the CUDA kernels, and the reason in a few words."""
    no_cuda = os.environ.get("ROBUST_LIGHTNING_NO_CUDA", "")
    if no_cuda not in ("", "0"):
        return False, f"ROBUST_LIGHTNING_NO_CUDA={no_cuda}"
    if not (torch.cuda.is_available() or os.environ.get("FORCE_CUDA", "") == "1"):
        return False, "no GPU visible and FORCE_CUDA is not 1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    nvcc = Path(cpp_extension.CUDA_HOME) / "bin" / ("nvcc.exe" if os.name == "nt" else "nvcc")
    if not nvcc.exists():
        return False, f"nvcc not found at {nvcc}"
    found = _nvcc_version(nvcc)
    wanted = ".".join(torch.version.cuda.split(".")[:2])
    if found != wanted:
        return False, f"nvcc {found} at {nvcc} does not match torch's CUDA {wanted}"
    return True, f"nvcc {found} at {nvcc}"


def extensions() -> list[cpp_extension.CppExtension]:
    debug = os.environ.get("ROBUST_LIGHTNING_DEBUG", "") == "1"
    use_cuda, reason = cuda_build_decision()
    if use_cuda:
        _note(f"building CPU + CUDA kernels ({reason})")
    else:
        _note(f"building CPU-only extension; CUDA skipped: {reason}")

    # Order matters for the CPU sources: the per-ISA kernel units go last so that, for any
    # inline function several objects define, the linker keeps a baseline-ISA copy (see
    # csrc/cpu/kernels_prelude.h).
    sources = [
        CSRC / "ops.cpp",
        CSRC / "attack_ops.cpp",
        CSRC / "cpu" / "attack_ops_cpu.cpp",
        CSRC / "cpu" / "kernels_default.cpp",
        CSRC / "cpu" / "kernels_avx2.cpp",
        CSRC / "cpu" / "kernels_avx512.cpp",
    ]
    if use_cuda:
        sources += sorted((CSRC / "cuda").glob("*.cu"))

    # -g0 overrides the -g that Python's own CFLAGS add: debug info for these template-heavy
    # units costs build time (CI has 2 cores) and ~10 MB of library for nothing at run time.
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = [
        *(opt if debug else [*opt, "-g0"]),
        # Bitwise agreement with the eager reference needs separately rounded multiply and
        # add (a compiler-fused a*b+c rounds once); see the numerics note in ops.py.
        "-ffp-contract=off",
        "-fvisibility=hidden",
        # Noise from torch's headers: CUDA-style `#pragma unroll` in at::vec, and GCC's note
        # that vector-returning inline functions under the AVX target pragma (see
        # csrc/cpu/kernels_prelude.h) have another ABI; they are only called from that region.
        "-Wno-unknown-pragmas",
        "-Wno-psabi",
    ]
    nvcc = [*opt, "--fmad=false", "-Xcompiler=-fvisibility=hidden"]
    if use_cuda:
        cxx.append("-DROBUST_LIGHTNING_WITH_CUDA")
    if os.name == "nt":  # MSVC spells these differently and needs none of them for correctness
        cxx = ["/O2" if not debug else "/Od", "/fp:strict"]
        nvcc = [*opt, "--fmad=false"]

    extension = cpp_extension.CUDAExtension if use_cuda else cpp_extension.CppExtension
    return [
        extension(
            name="robust_lightning._C",
            sources=[str(path.relative_to(ROOT)) for path in sources],
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc} if use_cuda else {"cxx": cxx},
            # Only the limited C API is used (torch adds Py_LIMITED_API), so one abi3 binary
            # serves every CPython >= 3.10.
            py_limited_api=True,
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    # torch compiles limited-API extensions with Py_LIMITED_API=0x030A0000 (CPython 3.10),
    # which is also this package's requires-python floor.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)

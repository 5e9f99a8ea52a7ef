"""Build of the ``robust_lightning._C`` extension (the fused attack ops in ``csrc/``).

Package metadata lives in ``pyproject.toml``; this file adds the extension module (in the
layout of pytorch/extension-cpp) and the shipped configs. Install from source with::

    pip install . --no-build-isolation          # or: pip install -e . --no-build-isolation --no-deps

``--no-build-isolation`` matters: the extension must be compiled against the torch that will
import it, so the build uses the environment's torch rather than a fresh copy (torch is not a
build requirement, so an isolated build has no torch and installs without the extension).

Without the extension (no torch at build time, no C++ compiler, or a failed compile) the
package still installs; the attacks then run on the pure-PyTorch reference ops and a one-time
warning at run time says how to build. ``ROBUST_LIGHTNING_REQUIRE_NATIVE=1`` makes a failed
build an error instead.

CUDA kernels (``csrc/cuda/*.cu``) are compiled when

* a GPU is visible (``torch.cuda.is_available()``) or ``FORCE_CUDA=1`` is set, and
* ``ROBUST_LIGHTNING_NO_CUDA`` is unset (or ``0``), and
* torch itself is a CUDA build, and ``nvcc`` exists under ``CUDA_HOME`` (as torch finds it)
  and its ``major.minor`` equals ``torch.version.cuda`` -- a mismatched toolkit produces
  kernels that fail to load or, worse, link against the wrong runtime.

Otherwise a CPU-only extension is built and a one-line note says why. Other knobs:
``TORCH_CUDA_ARCH_LIST`` (e.g. ``"9.0"``; torch's default otherwise), ``MAX_JOBS`` (parallel
compile jobs), ``ROBUST_LIGHTNING_DEBUG=1`` (``-O0 -g``), and
``ROBUST_LIGHTNING_PREBUILT_EXTENSION=path/to/_C.abi3.so``, which packages an extension already
compiled from these sources against this torch instead of compiling it again (the packaging
test uses it: a rebuild takes minutes on two cores).

The configs under ``configs/`` ship inside the package as ``robust_lightning/configs/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext as _SetuptoolsBuildExt
from setuptools.command.build_py import build_py as _BuildPy

try:
    import torch
    from torch.utils import cpp_extension
except ImportError as _torch_error:  # an isolated build, or torch not installed yet
    torch = None  # type: ignore[assignment]
    cpp_extension = None  # type: ignore[assignment]
    _TORCH_ERROR: str | None = str(_torch_error)
else:
    _TORCH_ERROR = None

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
CONFIGS = ROOT / "configs"
REQUIRE_NATIVE = os.environ.get("ROBUST_LIGHTNING_REQUIRE_NATIVE", "") not in ("", "0")
PREBUILT = os.environ.get("ROBUST_LIGHTNING_PREBUILT_EXTENSION", "")


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


def extensions() -> list[Any]:
    if cpp_extension is None:
        message = (f"torch is not importable at build time ({_TORCH_ERROR}); installing without the "
                   "compiled ops (reference ops run instead). To build them: pip install torch first, "
                   "then pip install --no-build-isolation robust-lightning")
        if REQUIRE_NATIVE:
            raise RuntimeError(message)
        _note(message)
        return []
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
            optional=not REQUIRE_NATIVE,
        )
    ]


def _build_ext_base() -> type:
    if cpp_extension is None:
        return _SetuptoolsBuildExt
    return cpp_extension.BuildExtension.with_options(use_ninja=True)


class BuildExt(_build_ext_base()):  # type: ignore[misc]
    """torch's BuildExtension that degrades to a pure-Python install when compiling fails.

    A missing or broken compiler is the user's machine, not a reason to refuse the install: the
    reference ops cover every op (slower), and ``robust_lightning.ops`` warns once at run time.
    The extension is ``optional`` (unless ``ROBUST_LIGHTNING_REQUIRE_NATIVE=1``), so setuptools
    then skips it when installing or copying it in place.
    """

    def build_extensions(self) -> None:
        if PREBUILT:
            for ext in self.extensions:
                target = Path(self.get_ext_fullpath(ext.name))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(PREBUILT, target)
                _note(f"packaged the prebuilt extension {PREBUILT} as {target.name} (not compiled)")
            return
        try:
            super().build_extensions()
        except Exception as error:  # CompileError, LinkError, a missing compiler or ninja
            if REQUIRE_NATIVE or not all(getattr(ext, "optional", False) for ext in self.extensions):
                raise
            _note(f"building the extension failed ({type(error).__name__}: {error}); installing without "
                  "the compiled ops (the reference ops run instead, with a warning at run time). "
                  "Fix the compiler and reinstall with --no-build-isolation to get them.")


class BuildPy(_BuildPy):
    """Also copy ``configs/**/*.yaml`` into the package as ``robust_lightning/configs/``."""

    def run(self) -> None:
        super().run()
        if not CONFIGS.is_dir():  # building from an sdist that already has them in place
            return
        target_root = Path(self.build_lib) / "robust_lightning" / "configs"
        for source in sorted(CONFIGS.rglob("*.yaml")):
            target = target_root / source.relative_to(CONFIGS)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(source), str(target))


setup(
    packages=find_packages(include=["robust_lightning", "robust_lightning.*"]),
    package_data={"robust_lightning": ["py.typed"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
    # torch compiles limited-API extensions with Py_LIMITED_API=0x030A0000 (CPython 3.10),
    # which is also this package's requires-python floor.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)

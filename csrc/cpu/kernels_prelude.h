// Headers every per-ISA kernel translation unit includes BEFORE it switches the compiler's
// target ISA (see kernels_avx2.cpp).
//
// Inline functions get the code generation options in force where they are *defined*. Anything
// a header defines after `#pragma GCC target("avx2")` is compiled with AVX2, and if the same
// inline function (say a c10::Half conversion) is also emitted by a baseline translation unit,
// the linker keeps one copy of it for the whole library: possibly the AVX2 one, which would
// then crash older CPUs from baseline code. Including every non-vector header first, under
// the baseline target, means the target switch only covers at::vec (which lives in a
// per-capability inline namespace, so its symbols never collide) and our own kernels.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <tuple>
#include <type_traits>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <ATen/native/quantized/AffineQuantizerBase.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/bit_cast.h>
#include <c10/util/complex.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>
#include <c10/util/qint32.h>
#include <c10/util/qint8.h>
#include <c10/util/quint8.h>
#include <torch/headeronly/cpu/vec/intrinsics.h>

#include "../attack_ops.h"
#include "kernels.h"

// GCC can retarget a region of a translation unit; clang's equivalent does not reliably reach
// lambda bodies, and MSVC has none, so those compilers build the baseline kernels only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ROBUST_LIGHTNING_HAVE_TARGET_PRAGMAS 1
#else
#define ROBUST_LIGHTNING_HAVE_TARGET_PRAGMAS 0
#endif


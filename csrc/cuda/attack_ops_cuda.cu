// CUDA kernels of the robust_lightning ops (one translation unit to keep the build short).
//
// Same numerics contract as the CPU kernels (csrc/cpu/kernels_impl.h): opmath arithmetic in
// the reference's order, one rounding on store. The file is compiled with --fmad=false so
// nvcc does not contract `c + delta * scale` or `x - s * lap` into an FMA, which would round
// differently from torch's separate eager kernels.
//
// Only c10's CUDA headers are used (not ATen/cuda/CUDAContext.h, which pulls in cuBLAS and
// cuSPARSE headers), so the build needs nothing from the toolkit beyond nvcc and the runtime.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../attack_ops.h"

namespace robust_lightning::cuda {
namespace {

constexpr int kThreads = 256;
// Elements of one sample reduced by one block for the L2 norms (32 per thread).
constexpr int64_t kNormChunk = 8192;
// Must equal L2_NORM_FLOOR in robust_lightning/ops.py.
constexpr double kL2NormFloor = 1e-12;

// at::vec::maximum / minimum semantics: a NaN in either operand propagates.
template <typename T>
__device__ __forceinline__ T maximum(T a, T b) {
  return a != a ? a : (a > b ? a : b);
}

template <typename T>
__device__ __forceinline__ T minimum(T a, T b) {
  return a != a ? a : (a < b ? a : b);
}

// torch.clamp semantics: std::min(std::max(v, lo), hi), NaN propagates.
template <typename T>
__device__ __forceinline__ T clamp(T v, T lo, T hi) {
  const T m = v < lo ? lo : v;
  return hi < m ? hi : m;
}

template <typename T>
__device__ __forceinline__ T linf_value(T x, T g, T c, T eps, T alpha, T lo, T hi) {
  // sign() as torch computes it: (g > 0) - (g < 0); alpha * sign is exact.
  const T sign = static_cast<T>(g > T(0)) - static_cast<T>(g < T(0));
  const T stepped = x + alpha * sign;
  return clamp(minimum(maximum(stepped, c - eps), c + eps), lo, hi);
}

template <typename T>
__device__ __forceinline__ T l2_delta(T x, T g, T c, T alpha, T denom) {
  return (x + (alpha * g) / denom) - c;
}

// Several elements per memory transaction; `kVec * sizeof(scalar_t)` is 16 bytes.
template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) Pack {
  scalar_t v[kVec];
};

int multiprocessor_count() {
  // Queried once per device for the process; launches are frequent and this never changes.
  static const std::vector<int> counts = [] {
    std::vector<int> out(c10::cuda::device_count());
    for (size_t d = 0; d < out.size(); ++d) {
      C10_CUDA_CHECK(cudaDeviceGetAttribute(
          &out[d], cudaDevAttrMultiProcessorCount, static_cast<int>(d)));
    }
    return out;
  }();
  return counts.at(c10::cuda::current_device());
}

int64_t blocks_for(int64_t work_items) {
  // Grid-stride loops: enough blocks to fill the GPU several times over, no more.
  const int64_t max_blocks = static_cast<int64_t>(multiprocessor_count()) * 32;
  return std::max<int64_t>(
      1, std::min<int64_t>((work_items + kThreads - 1) / kThreads, max_blocks));
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// ---------------------------------------------------------------------------------------------
// L-inf
// ---------------------------------------------------------------------------------------------

// `x` and `out` may be the same memory (the in-place op), so no __restrict__ on them; every
// thread reads its elements before writing them.
template <typename scalar_t, int kVec>
__global__ void linf_step_kernel(
    const scalar_t* x,
    const scalar_t* g,
    const scalar_t* c,
    scalar_t* out,
    const at::opmath_type<scalar_t>* eps,
    bool per_sample,
    int64_t row_numel,
    int64_t num_packs,
    at::opmath_type<scalar_t> alpha,
    at::opmath_type<scalar_t> lo,
    at::opmath_type<scalar_t> hi) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_packs;
       p += stride) {
    const int64_t i = p * kVec;
    // kVec divides row_numel whenever kVec > 1 (checked by the launcher): a pack never
    // straddles two samples.
    const opmath_t e = eps[per_sample ? i / row_numel : 0];
    const P xv = reinterpret_cast<const P*>(x)[p];
    const P gv = reinterpret_cast<const P*>(g)[p];
    const P cv = reinterpret_cast<const P*>(c)[p];
    P r;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      r.v[k] = static_cast<scalar_t>(linf_value<opmath_t>(
          static_cast<opmath_t>(xv.v[k]), static_cast<opmath_t>(gv.v[k]),
          static_cast<opmath_t>(cv.v[k]), e, alpha, lo, hi));
    }
    reinterpret_cast<P*>(out)[p] = r;
  }
}

template <typename scalar_t, int kVec>
void launch_linf(const StepBuffers& s, int64_t total) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t num_packs = total / kVec;
  linf_step_kernel<scalar_t, kVec>
      <<<blocks_for(num_packs), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          s.x.const_data_ptr<scalar_t>(), s.grad.const_data_ptr<scalar_t>(),
          s.clean.const_data_ptr<scalar_t>(), s.out.mutable_data_ptr<scalar_t>(),
          s.eps.const_data_ptr<opmath_t>(), s.eps.numel() > 1, s.row_numel, num_packs,
          static_cast<opmath_t>(s.alpha), static_cast<opmath_t>(s.lo),
          static_cast<opmath_t>(s.hi));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void linf_launch(const StepBuffers& s) {
  const c10::cuda::OptionalCUDAGuard guard(s.out.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, s.out.scalar_type(), "linf_step_cuda", [&] {
        constexpr int kVec = 16 / sizeof(scalar_t);
        const int64_t total = s.batch * s.row_numel;
        const bool vectorisable = s.row_numel % kVec == 0 && aligned16(s.x.const_data_ptr()) &&
            aligned16(s.grad.const_data_ptr()) && aligned16(s.clean.const_data_ptr()) &&
            aligned16(s.out.const_data_ptr());
        if (vectorisable) {
          launch_linf<scalar_t, kVec>(s, total);
        } else {
          launch_linf<scalar_t, 1>(s, total);
        }
      });
}

// ---------------------------------------------------------------------------------------------
// L2: one block per (sample, chunk). Partial sums go to a (B, chunks) buffer and are summed in
// chunk order by whoever needs the norm, so the result is deterministic (no atomics).
// ---------------------------------------------------------------------------------------------

// Sum over the block in a fixed tree order; the result is valid in thread 0.
template <typename T>
__device__ T block_sum(T value) {
  __shared__ T warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  if (lane == 0) {
    warp_sums[warp] = value;
  }
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) {
      total += warp_sums[w];
    }
  }
  return total;
}

// End (exclusive, within the sample) of chunk k.
__device__ __forceinline__ int64_t chunk_end(int64_t k, int64_t row_numel) {
  const int64_t end = (k + 1) * kNormChunk;
  return end < row_numel ? end : row_numel;
}

template <typename T>
__device__ __forceinline__ T norm_from_partials(const T* partial, int64_t chunks) {
  double sum = 0.0;
  for (int64_t k = 0; k < chunks; ++k) {
    sum += static_cast<double>(partial[k]);
  }
  return static_cast<T>(sqrt(sum));
}

template <typename scalar_t>
__global__ void l2_grad_partials_kernel(
    const scalar_t* g, at::opmath_type<scalar_t>* partial, int64_t row_numel, int64_t chunks) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t b = blockIdx.x / chunks;
  const int64_t k = blockIdx.x % chunks;
  const int64_t begin = b * row_numel + k * kNormChunk;
  const int64_t end = b * row_numel + chunk_end(k, row_numel);
  opmath_t acc = opmath_t(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const opmath_t v = static_cast<opmath_t>(g[i]);
    acc += v * v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = acc;
  }
}

template <typename scalar_t>
__global__ void l2_delta_partials_kernel(
    const scalar_t* x,
    const scalar_t* g,
    const scalar_t* c,
    const at::opmath_type<scalar_t>* g_partial,
    at::opmath_type<scalar_t>* d_partial,
    int64_t row_numel,
    int64_t chunks,
    at::opmath_type<scalar_t> alpha) {
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ opmath_t denom_shared;
  const int64_t b = blockIdx.x / chunks;
  const int64_t k = blockIdx.x % chunks;
  if (threadIdx.x == 0) {
    denom_shared = norm_from_partials(g_partial + b * chunks, chunks) +
        static_cast<opmath_t>(kL2NormFloor);
  }
  __syncthreads();
  const opmath_t denom = denom_shared;
  const int64_t begin = b * row_numel + k * kNormChunk;
  const int64_t end = b * row_numel + chunk_end(k, row_numel);
  opmath_t acc = opmath_t(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const opmath_t d = l2_delta<opmath_t>(
        static_cast<opmath_t>(x[i]), static_cast<opmath_t>(g[i]), static_cast<opmath_t>(c[i]),
        alpha, denom);
    acc += d * d;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    d_partial[blockIdx.x] = acc;
  }
}

template <typename scalar_t>
__global__ void l2_write_kernel(
    const scalar_t* x,
    const scalar_t* g,
    const scalar_t* c,
    scalar_t* out,
    const at::opmath_type<scalar_t>* g_partial,
    const at::opmath_type<scalar_t>* d_partial,
    const at::opmath_type<scalar_t>* eps,
    bool per_sample,
    int64_t row_numel,
    int64_t chunks,
    at::opmath_type<scalar_t> alpha,
    at::opmath_type<scalar_t> lo,
    at::opmath_type<scalar_t> hi) {
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ opmath_t denom_shared, scale_shared;
  const int64_t b = blockIdx.x / chunks;
  const int64_t k = blockIdx.x % chunks;
  if (threadIdx.x == 0) {
    const opmath_t floor = static_cast<opmath_t>(kL2NormFloor);
    denom_shared = norm_from_partials(g_partial + b * chunks, chunks) + floor;
    const opmath_t ratio =
        eps[per_sample ? b : 0] / (norm_from_partials(d_partial + b * chunks, chunks) + floor);
    // clamp(max=1) that lets NaN through, as torch.clamp does.
    scale_shared = ratio > opmath_t(1) ? opmath_t(1) : ratio;
  }
  __syncthreads();
  const opmath_t denom = denom_shared;
  const opmath_t scale = scale_shared;
  const int64_t begin = b * row_numel + k * kNormChunk;
  const int64_t end = b * row_numel + chunk_end(k, row_numel);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const opmath_t cv = static_cast<opmath_t>(c[i]);
    const opmath_t d = l2_delta<opmath_t>(
        static_cast<opmath_t>(x[i]), static_cast<opmath_t>(g[i]), cv, alpha, denom);
    out[i] = static_cast<scalar_t>(clamp(cv + d * scale, lo, hi));
  }
}

void l2_launch(const StepBuffers& s) {
  const c10::cuda::OptionalCUDAGuard guard(s.out.device());
  const int64_t chunks = (s.row_numel + kNormChunk - 1) / kNormChunk;
  const int64_t blocks = s.batch * chunks;
  TORCH_CHECK(
      blocks <= std::numeric_limits<int32_t>::max(),
      "l2_step_: batch too large for one launch (", blocks, " blocks)");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, s.out.scalar_type(), "l2_step_cuda", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const auto opts = s.out.options().dtype(c10::CppTypeToScalarType<opmath_t>::value);
        at::Tensor g_partial = at::empty({blocks}, opts);
        at::Tensor d_partial = at::empty({blocks}, opts);
        const scalar_t* x = s.x.const_data_ptr<scalar_t>();
        const scalar_t* g = s.grad.const_data_ptr<scalar_t>();
        const scalar_t* c = s.clean.const_data_ptr<scalar_t>();
        const opmath_t alpha = static_cast<opmath_t>(s.alpha);
        l2_grad_partials_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            g, g_partial.mutable_data_ptr<opmath_t>(), s.row_numel, chunks);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        l2_delta_partials_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            x, g, c, g_partial.const_data_ptr<opmath_t>(),
            d_partial.mutable_data_ptr<opmath_t>(), s.row_numel, chunks, alpha);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        l2_write_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            x, g, c, s.out.mutable_data_ptr<scalar_t>(), g_partial.const_data_ptr<opmath_t>(),
            d_partial.const_data_ptr<opmath_t>(), s.eps.const_data_ptr<opmath_t>(),
            s.eps.numel() > 1, s.row_numel, chunks, alpha, static_cast<opmath_t>(s.lo),
            static_cast<opmath_t>(s.hi));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

// ---------------------------------------------------------------------------------------------
// Laplacian sharpening
// ---------------------------------------------------------------------------------------------

template <typename scalar_t>
__global__ void laplacian_sharpen_kernel(
    const scalar_t* __restrict__ in,
    scalar_t* __restrict__ out,
    int64_t total,
    int64_t H,
    int64_t W,
    at::opmath_type<scalar_t> strength) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t w = i % W;
    const int64_t h = (i / W) % H;
    const int64_t plane = i - h * W - w;
    // Replicate padding: out-of-range neighbours are clamped to the border.
    const int64_t hu = h > 0 ? h - 1 : 0;
    const int64_t hd = h + 1 < H ? h + 1 : H - 1;
    const int64_t wl = w > 0 ? w - 1 : 0;
    const int64_t wr = w + 1 < W ? w + 1 : W - 1;
    const opmath_t up = static_cast<opmath_t>(in[plane + hu * W + w]);
    const opmath_t down = static_cast<opmath_t>(in[plane + hd * W + w]);
    const opmath_t left = static_cast<opmath_t>(in[plane + h * W + wl]);
    const opmath_t right = static_cast<opmath_t>(in[plane + h * W + wr]);
    const opmath_t center = static_cast<opmath_t>(in[i]);
    const opmath_t lap = (((up + down) + left) + right) - opmath_t(4) * center;
    out[i] = static_cast<scalar_t>(clamp(center - strength * lap, opmath_t(0), opmath_t(1)));
  }
}

// ---------------------------------------------------------------------------------------------
// Op entry points
// ---------------------------------------------------------------------------------------------

at::Tensor& linf_step_inplace_cuda(
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_inplace("linf_step_", &linf_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor& l2_step_inplace_cuda(
    at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_inplace("l2_step_", &l2_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor linf_step_cuda(
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_functional("linf_step", &linf_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor l2_step_cuda(
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x_clean,
    const at::Tensor& eps,
    double alpha,
    double lo,
    double hi) {
  return step_functional("l2_step", &l2_launch, x_adv, grad, x_clean, eps, alpha, lo, hi);
}

at::Tensor laplacian_sharpen_cuda(const at::Tensor& x, double strength) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const at::Tensor in = sharpen_input(x);
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  const int64_t total = in.numel();
  if (total == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, in.scalar_type(), "laplacian_sharpen_cuda", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        laplacian_sharpen_kernel<scalar_t>
            <<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                in.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total,
                in.size(2), in.size(3), static_cast<opmath_t>(strength));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(robust_lightning, CUDA, m) {
  m.impl("linf_step_", TORCH_FN(linf_step_inplace_cuda));
  m.impl("l2_step_", TORCH_FN(l2_step_inplace_cuda));
  m.impl("linf_step", TORCH_FN(linf_step_cuda));
  m.impl("l2_step", TORCH_FN(l2_step_cuda));
  m.impl("laplacian_sharpen", TORCH_FN(laplacian_sharpen_cuda));
}

} // namespace robust_lightning::cuda

// Vectorised CPU kernels of the fused attack ops, written once against at::vec.
//
// Included by kernels_{default,avx2,avx512}.cpp after they define CPU_CAPABILITY (and
// CPU_CAPABILITY_AVX2 / CPU_CAPABILITY_AVX512), exactly as ATen builds its own CPU kernels:
// at::vec::Vectorized then maps to SSE2-, AVX2- or AVX512-width code, and everything here sits
// in an inline namespace named after the capability so the three copies never collide.
//
// Numerics (the contract in robust_lightning/ops.py): every value is widened to the opmath
// type (float for fp16/bf16/fp32, double for fp64), the arithmetic is the reference's sequence
// of IEEE operations in the reference's order, and the result is rounded once on store. The
// library is compiled with -ffp-contract=off so no multiply-add is fused behind our back;
// with that, the L-inf step and the sharpening are bit-identical to the eager reference and
// the L2 step differs only through how its two norms are summed (see the L2 section).
//
// Intentionally no `#pragma once`: each including translation unit compiles this once.

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

namespace robust_lightning::cpu {
inline namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// Elements per parallel task: big enough that handing work to a thread is noise next to the
// memory traffic, small enough to spread one CIFAR batch over the cores.
constexpr int64_t kGrainSize = 32768;

// Elements per partial sum of the L2 norms. It is fixed (not derived from the thread count),
// so a sample's norm is the same sum in the same order however the batch is split: results
// are reproducible bit for bit across thread counts and between the two L2 schedules below.
constexpr int64_t kNormChunk = 4096;

// Must equal L2_NORM_FLOOR in robust_lightning/ops.py.
constexpr double kL2NormFloor = 1e-12;

// One Vectorized<scalar_t> worth of elements, widened to opmath vectors: one vector for
// fp32/fp64, two float vectors for the 16-bit types.
template <typename scalar_t>
struct OpVec {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  using fVec = Vectorized<opmath_t>;
  static constexpr bool kReduced = !std::is_same_v<scalar_t, opmath_t>;
  static constexpr int kParts = kReduced ? 2 : 1;
  static constexpr int64_t kWidth = Vec::size();

  fVec part[kParts];

  // `count` is either std::integral_constant<int64_t, kWidth> (the main loop, where the
  // branch folds away) or a run-time tail length; a partial load zero-fills the other lanes.
  template <typename Count>
  static C10_ALWAYS_INLINE OpVec load(const scalar_t* ptr, Count count) {
    const Vec v = count == kWidth ? Vec::loadu(ptr) : Vec::loadu(ptr, count);
    OpVec out;
    if constexpr (kReduced) {
      std::tie(out.part[0], out.part[1]) = at::vec::convert_to_float<scalar_t>(v);
    } else {
      out.part[0] = v;
    }
    return out;
  }

  template <typename Count>
  C10_ALWAYS_INLINE void store(scalar_t* ptr, Count count) const {
    Vec v;
    if constexpr (kReduced) {
      v = at::vec::convert_from_float<scalar_t>(part[0], part[1]);
    } else {
      v = part[0];
    }
    if (count == kWidth) {
      v.store(ptr);
    } else {
      v.store(ptr, static_cast<int>(count));
    }
  }
};

// Runs body(i, count) over [0, n) in steps of W elements; the last step may be partial.
template <int64_t W, typename Body>
C10_ALWAYS_INLINE void vec_loop(int64_t n, const Body& body) {
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    body(i, std::integral_constant<int64_t, W>{});
  }
  if (i < n) {
    body(i, n - i);
  }
}

// Calls f(row, begin, end) for the pieces of the flat range [begin, end) that fall in one row.
template <typename F>
C10_ALWAYS_INLINE void for_each_row_segment(
    int64_t begin, int64_t end, int64_t row_numel, const F& f) {
  while (begin < end) {
    const int64_t row = begin / row_numel;
    const int64_t segment_end = std::min(end, (row + 1) * row_numel);
    f(row, begin, segment_end);
    begin = segment_end;
  }
}

template <typename T>
double horizontal_sum(const Vectorized<T>& v) {
  __at_align__ T lanes[Vectorized<T>::size()];
  v.store(lanes);
  double sum = 0.0;
  for (int64_t lane = 0; lane < Vectorized<T>::size(); ++lane) {
    sum += static_cast<double>(lanes[lane]);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// L-inf step: clamp(min(max(x + alpha*sign(g), c - eps), c + eps), lo, hi)
// ---------------------------------------------------------------------------------------------

template <typename scalar_t>
void linf_segment(
    const scalar_t* x,
    const scalar_t* g,
    const scalar_t* c,
    scalar_t* out,
    int64_t n,
    at::opmath_type<scalar_t> eps,
    at::opmath_type<scalar_t> alpha,
    at::opmath_type<scalar_t> lo,
    at::opmath_type<scalar_t> hi) {
  using V = OpVec<scalar_t>;
  using fVec = typename V::fVec;
  const fVec v_eps(eps), v_alpha(alpha), v_lo(lo), v_hi(hi), zero(0);
  vec_loop<V::kWidth>(n, [&](int64_t i, auto count) {
    const V xv = V::load(x + i, count);
    const V gv = V::load(g + i, count);
    const V cv = V::load(c + i, count);
    V result;
    for (int k = 0; k < V::kParts; ++k) {
      // sign() as torch computes it: (g > 0) - (g < 0), so sign(0) = +0 and sign(NaN) = 0.
      // alpha * sign is exact, hence so is the whole step up to the final rounding.
      const fVec sign = gv.part[k].gt(zero) - gv.part[k].lt(zero);
      const fVec stepped = xv.part[k] + v_alpha * sign;
      const fVec lower = cv.part[k] - v_eps;
      const fVec upper = cv.part[k] + v_eps;
      const fVec projected = at::vec::minimum(at::vec::maximum(stepped, lower), upper);
      result.part[k] = at::vec::clamp(projected, v_lo, v_hi);
    }
    result.store(out + i, count);
  });
}

template <typename scalar_t>
void linf_step_impl(const StepBuffers& s) {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* x = s.x.const_data_ptr<scalar_t>();
  const scalar_t* g = s.grad.const_data_ptr<scalar_t>();
  const scalar_t* c = s.clean.const_data_ptr<scalar_t>();
  scalar_t* out = s.out.mutable_data_ptr<scalar_t>();
  const opmath_t* eps = s.eps.const_data_ptr<opmath_t>();
  const bool per_sample = s.eps.numel() > 1;
  const opmath_t alpha = static_cast<opmath_t>(s.alpha);
  const opmath_t lo = static_cast<opmath_t>(s.lo);
  const opmath_t hi = static_cast<opmath_t>(s.hi);
  const int64_t total = s.batch * s.row_numel;

  // Parallelise over the flat element range, not over samples, so that batch 1 and huge
  // images use every core too; a task that straddles samples splits at the boundary.
  at::parallel_for(0, total, kGrainSize, [&](int64_t begin, int64_t end) {
    if (!per_sample) {
      linf_segment(x + begin, g + begin, c + begin, out + begin, end - begin, eps[0], alpha, lo,
                   hi);
      return;
    }
    for_each_row_segment(begin, end, s.row_numel, [&](int64_t row, int64_t b, int64_t e) {
      linf_segment(x + b, g + b, c + b, out + b, e - b, eps[row], alpha, lo, hi);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// L2 step:
//   delta = x + alpha * g / (||g|| + floor) - c
//   out   = clamp(c + delta * min(eps / (||delta|| + floor), 1), lo, hi)
//
// ||delta|| depends on ||g||, which naively costs three sweeps over a sample (||g||, ||delta||,
// write). Instead one sweep gathers the moments G = <g, g>, B = <d0, g> and A = <d0, d0> of
// g and the current perturbation d0 = x - c, and with s = alpha / (||g|| + floor)
//   ||delta||^2 = A + 2 s B + s^2 G
// follows without touching memory again; the write sweep then evaluates delta elementwise in
// the reference's exact operation order. The closed form can cancel when delta is tiny, but
// its absolute error is ~1e-7 (eps + alpha)^2 and a tiny ||delta|| only matters if it exceeds
// eps (scale = min(eps / ||delta||, 1)), where the relative error is ~1e-7 (1 + alpha/eps)^2:
// the same order as the summation-order differences any two norm implementations have.
// ---------------------------------------------------------------------------------------------

struct Moments {
  double gg = 0.0;  // <g, g>
  double dg = 0.0;  // <x - c, g>
  double dd = 0.0;  // <x - c, x - c>

  void add(const Moments& other) {
    gg += other.gg;
    dg += other.dg;
    dd += other.dd;
  }
};

template <typename scalar_t>
Moments l2_moments(const scalar_t* x, const scalar_t* g, const scalar_t* c, int64_t n) {
  using V = OpVec<scalar_t>;
  using fVec = typename V::fVec;
  fVec gg[V::kParts], dg[V::kParts], dd[V::kParts];
  for (int k = 0; k < V::kParts; ++k) {
    gg[k] = fVec(0);
    dg[k] = fVec(0);
    dd[k] = fVec(0);
  }
  // Zero-filled tail lanes contribute 0 to every moment.
  vec_loop<V::kWidth>(n, [&](int64_t i, auto count) {
    const V xv = V::load(x + i, count);
    const V gv = V::load(g + i, count);
    const V cv = V::load(c + i, count);
    for (int k = 0; k < V::kParts; ++k) {
      const fVec d0 = xv.part[k] - cv.part[k];
      gg[k] = gg[k] + gv.part[k] * gv.part[k];
      dg[k] = dg[k] + d0 * gv.part[k];
      dd[k] = dd[k] + d0 * d0;
    }
  });
  Moments m;
  for (int k = 0; k < V::kParts; ++k) {
    m.gg += horizontal_sum(gg[k]);
    m.dg += horizontal_sum(dg[k]);
    m.dd += horizontal_sum(dd[k]);
  }
  return m;
}

// Per-sample constants of the write sweep.
template <typename opmath_t>
struct L2Factors {
  opmath_t denom;  // ||g|| + floor, as the reference rounds it
  opmath_t scale;  // min(eps / (||delta|| + floor), 1)
};

template <typename opmath_t>
L2Factors<opmath_t> l2_factors(const Moments& m, opmath_t eps, opmath_t alpha) {
  const opmath_t floor = static_cast<opmath_t>(kL2NormFloor);
  L2Factors<opmath_t> f;
  // The reference's norms are opmath tensors: round ||g|| to opmath, then add the floor.
  f.denom = static_cast<opmath_t>(std::sqrt(m.gg)) + floor;
  const double step = static_cast<double>(alpha) / static_cast<double>(f.denom);
  const double delta_sq = std::max(0.0, m.dd + 2.0 * step * m.dg + step * step * m.gg);
  const opmath_t ratio = eps / (static_cast<opmath_t>(std::sqrt(delta_sq)) + floor);
  // clamp(max=1) that lets NaN through, as torch.clamp does.
  f.scale = ratio > opmath_t(1) ? opmath_t(1) : ratio;
  return f;
}

template <typename scalar_t>
void l2_write(
    const scalar_t* x,
    const scalar_t* g,
    const scalar_t* c,
    scalar_t* out,
    int64_t n,
    at::opmath_type<scalar_t> alpha,
    L2Factors<at::opmath_type<scalar_t>> f,
    at::opmath_type<scalar_t> lo,
    at::opmath_type<scalar_t> hi) {
  using V = OpVec<scalar_t>;
  using fVec = typename V::fVec;
  const fVec v_alpha(alpha), v_denom(f.denom), v_scale(f.scale), v_lo(lo), v_hi(hi);
  vec_loop<V::kWidth>(n, [&](int64_t i, auto count) {
    const V xv = V::load(x + i, count);
    const V gv = V::load(g + i, count);
    const V cv = V::load(c + i, count);
    V result;
    for (int k = 0; k < V::kParts; ++k) {
      // The reference's evaluation order: ((x + (alpha * g) / denom) - c).
      const fVec delta = (xv.part[k] + (v_alpha * gv.part[k]) / v_denom) - cv.part[k];
      result.part[k] = at::vec::clamp(cv.part[k] + delta * v_scale, v_lo, v_hi);
    }
    result.store(out + i, count);
  });
}

template <typename scalar_t>
void l2_step_impl(const StepBuffers& s) {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* x = s.x.const_data_ptr<scalar_t>();
  const scalar_t* g = s.grad.const_data_ptr<scalar_t>();
  const scalar_t* c = s.clean.const_data_ptr<scalar_t>();
  scalar_t* out = s.out.mutable_data_ptr<scalar_t>();
  const opmath_t* eps = s.eps.const_data_ptr<opmath_t>();
  const bool per_sample = s.eps.numel() > 1;
  const opmath_t alpha = static_cast<opmath_t>(s.alpha);
  const opmath_t lo = static_cast<opmath_t>(s.lo);
  const opmath_t hi = static_cast<opmath_t>(s.hi);
  const int64_t batch = s.batch;
  const int64_t n = s.row_numel;
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  auto chunk_moments = [&](int64_t b, int64_t k) {
    const int64_t o = b * n + k * kNormChunk;
    return l2_moments(x + o, g + o, c + o, std::min(kNormChunk, n - k * kNormChunk));
  };

  if (chunks == 1 || batch >= 4 * at::get_num_threads()) {
    // Many samples (the usual case): a task owns whole samples, so the write sweep finds the
    // sample still in this core's cache from the moment sweep.
    const int64_t grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(n, 1));
    at::parallel_for(0, batch, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        Moments m;
        for (int64_t k = 0; k < chunks; ++k) {
          m.add(chunk_moments(b, k));
        }
        const int64_t off = b * n;
        l2_write(x + off, g + off, c + off, out + off, n, alpha,
                 l2_factors(m, eps[per_sample ? b : 0], alpha), lo, hi);
      }
    });
    return;
  }

  // Few large samples (batch 1, big images): parallelise inside samples, one sweep at a time,
  // with the same chunk partials added in the same order as above.
  std::vector<Moments> partial(batch * chunks);
  at::parallel_for(0, batch * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      partial[t] = chunk_moments(t / chunks, t % chunks);
    }
  });
  std::vector<L2Factors<opmath_t>> factors(batch);
  for (int64_t b = 0; b < batch; ++b) {
    Moments m;
    for (int64_t k = 0; k < chunks; ++k) {
      m.add(partial[b * chunks + k]);
    }
    factors[b] = l2_factors(m, eps[per_sample ? b : 0], alpha);
  }
  at::parallel_for(0, batch * n, kGrainSize, [&](int64_t begin, int64_t end) {
    for_each_row_segment(begin, end, n, [&](int64_t b, int64_t i, int64_t e) {
      l2_write(x + i, g + i, c + i, out + i, e - i, alpha, factors[b], lo, hi);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Laplacian sharpening: clip(x - s * lap(x), 0, 1), 4-neighbour stencil, replicate padding.
// ---------------------------------------------------------------------------------------------

template <typename opmath_t>
C10_ALWAYS_INLINE opmath_t sharpen_scalar(
    opmath_t up, opmath_t down, opmath_t left, opmath_t right, opmath_t center,
    opmath_t strength) {
  // The reference's order: up + down + left + right - 4 * center, then center - s * lap.
  const opmath_t lap = (((up + down) + left) + right) - opmath_t(4) * center;
  const opmath_t v = center - strength * lap;
  // at::vec::clamp's semantics (NaN propagates).
  return std::min(std::max(v, opmath_t(0)), opmath_t(1));
}

template <typename scalar_t>
void laplacian_impl(const at::Tensor& in, const at::Tensor& out, double strength_d) {
  using opmath_t = at::opmath_type<scalar_t>;
  using V = OpVec<scalar_t>;
  using fVec = typename V::fVec;
  const int64_t H = in.size(2);
  const int64_t W = in.size(3);
  const int64_t rows = in.size(0) * in.size(1) * H;
  const scalar_t* src = in.const_data_ptr<scalar_t>();
  scalar_t* dst = out.mutable_data_ptr<scalar_t>();
  const opmath_t strength = static_cast<opmath_t>(strength_d);
  const fVec v_strength(strength), v_four(4), zero(0), one(1);

  const int64_t grain = std::max<int64_t>(1, kGrainSize / W);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t h = r % H;
      const scalar_t* cur = src + r * W;
      // Replicate padding: the row above the first row is the first row itself, etc.
      const scalar_t* up = h > 0 ? cur - W : cur;
      const scalar_t* down = h + 1 < H ? cur + W : cur;
      scalar_t* o = dst + r * W;

      auto edge = [&](int64_t w) {
        const int64_t wl = w > 0 ? w - 1 : 0;
        const int64_t wr = w + 1 < W ? w + 1 : W - 1;
        o[w] = static_cast<scalar_t>(sharpen_scalar<opmath_t>(
            up[w], down[w], cur[wl], cur[wr], cur[w], strength));
      };
      edge(0);
      if (W > 1) {
        edge(W - 1);
      }
      // Interior columns [1, W - 1): both horizontal neighbours exist, so plain shifted loads.
      if (W > 2) {
        vec_loop<V::kWidth>(W - 2, [&](int64_t j, auto count) {
          const int64_t w = 1 + j;
          const V u = V::load(up + w, count);
          const V d = V::load(down + w, count);
          const V l = V::load(cur + w - 1, count);
          const V rt = V::load(cur + w + 1, count);
          const V ce = V::load(cur + w, count);
          V result;
          for (int k = 0; k < V::kParts; ++k) {
            const fVec lap = (((u.part[k] + d.part[k]) + l.part[k]) + rt.part[k]) -
                v_four * ce.part[k];
            result.part[k] = at::vec::clamp(ce.part[k] - v_strength * lap, zero, one);
          }
          result.store(o + w, count);
        });
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Dtype dispatch and this capability's table.
// ---------------------------------------------------------------------------------------------

inline void linf_step_kernel(const StepBuffers& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, s.out.scalar_type(), "linf_step_cpu",
      [&] { linf_step_impl<scalar_t>(s); });
}

inline void l2_step_kernel(const StepBuffers& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, s.out.scalar_type(), "l2_step_cpu",
      [&] { l2_step_impl<scalar_t>(s); });
}

inline void laplacian_sharpen_kernel(
    const at::Tensor& in, const at::Tensor& out, double strength) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, in.scalar_type(), "laplacian_sharpen_cpu",
      [&] { laplacian_impl<scalar_t>(in, out, strength); });
}

// Built on first use rather than as a namespace-scope object: a static initialiser here would
// be compiled for this capability's ISA and run at library load on every CPU.
inline const KernelTable* kernel_table(const char* isa) {
  static const KernelTable table{isa, &linf_step_kernel, &l2_step_kernel,
                                 &laplacian_sharpen_kernel};
  return &table;
}

} // namespace CPU_CAPABILITY
} // namespace robust_lightning::cpu

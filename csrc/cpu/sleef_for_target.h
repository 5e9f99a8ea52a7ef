// Included by kernels_avx2.cpp / kernels_avx512.cpp right after their target pragma and
// CPU_CAPABILITY defines, before kernels_impl.h.
//
// at::vec's AVX2/AVX512 classes name SLEEF's vector math functions (our kernels call none of
// them), and <sleef.h> declares those only under __AVX__ / __AVX512F__, which GCC's target
// pragma does not define. <sleef.h> holds declarations only, so it is safe to include here,
// with the macros set just for its duration.
#if !defined(__AVX__)
#define __AVX__ 1
#define ROBUST_LIGHTNING_DEFINED_AVX
#endif
#if defined(CPU_CAPABILITY_AVX512) && !defined(__AVX512F__)
#define __AVX512F__ 1
#define ROBUST_LIGHTNING_DEFINED_AVX512F
#endif

#include <sleef.h>

#if defined(ROBUST_LIGHTNING_DEFINED_AVX)
#undef __AVX__
#undef ROBUST_LIGHTNING_DEFINED_AVX
#endif
#if defined(ROBUST_LIGHTNING_DEFINED_AVX512F)
#undef __AVX512F__
#undef ROBUST_LIGHTNING_DEFINED_AVX512F
#endif

// Helpers shared by every backprop CUDA kernel.
//
// The kernels are C++ templates over the float type T (float or double), instantiated by name
// ("im2col<float>") through NVRTC; see kernels/cuda.py. The sources include no headers, because NVRTC
// has none: everything used here is either a CUDA built-in (blockIdx, expf, __int_as_float, ...) or
// defined in this file. The CPU test harness (tests/cuda_harness/shim.h) defines the same built-ins
// for g++, so the very same sources also run on the host.
//
// Indexing: every index and size is a 64-bit signed integer (idx_t), and every kernel walks its
// elements with a grid-stride loop, so any size works with a bounded grid and nothing overflows
// past 2^31 elements.
#ifndef BACKPROP_CUDA_COMMON_CUH
#define BACKPROP_CUDA_COMMON_CUH

typedef long long idx_t;

// First element of this thread, and the distance to its next one, in a grid-stride loop.
__device__ __forceinline__ idx_t thread_index() { return (idx_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ idx_t grid_stride() { return (idx_t)blockDim.x * gridDim.x; }

__device__ __forceinline__ idx_t min_idx(idx_t a, idx_t b) { return a < b ? a : b; }

// Math on T without relying on overloads that a host compiler might resolve to double.
__device__ __forceinline__ float bp_exp(float x) { return expf(x); }
__device__ __forceinline__ double bp_exp(double x) { return exp(x); }
__device__ __forceinline__ float bp_log(float x) { return logf(x); }
__device__ __forceinline__ double bp_log(double x) { return log(x); }
__device__ __forceinline__ float bp_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double bp_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float bp_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double bp_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float bp_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double bp_abs(double x) { return fabs(x); }

// -inf and NaN of T, from their bit patterns (no INFINITY/NAN macros without headers).
template <typename T> __device__ __forceinline__ T minus_infinity();
template <> __device__ __forceinline__ float minus_infinity<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double minus_infinity<double>() {
  return -__longlong_as_double(0x7ff0000000000000LL);
}
template <typename T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double quiet_nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// CuPy compiles every kernel with -ftz=true: float32 subnormals are flushed to zero on the GPU anyway
// (double is not affected); this flush makes the reference's rule explicit for both types.
// Zero for |x| below T's smallest normal number (x itself otherwise, NaN included): optimizer state
// that decays geometrically is kept out of the subnormal range, as kernels/reference.py does. NVRTC
// fuses a * b + c into one rounding by default, so a value within one rounding of the boundary may be
// flushed here and kept by the reference (the state differs by less than 1.2e-38 then).
__device__ __forceinline__ float flush_subnormal(float x) { return bp_abs(x) < __int_as_float(0x00800000) ? 0.0f : x; }
__device__ __forceinline__ double flush_subnormal(double x) {
  return bp_abs(x) < __longlong_as_double(0x0010000000000000LL) ? 0.0 : x;
}

// The output positions o whose window covers padded coordinate p along one axis:
// o * stride <= p <= o * stride + kernel - 1 and 0 <= o < out, i.e. first <= o <= last (empty when
// first > last, e.g. for trailing rows that no window reaches).
__device__ __forceinline__ void covering_outputs(idx_t p, idx_t kernel, idx_t stride, idx_t out, idx_t* first,
                                                 idx_t* last) {
  *first = p < kernel ? 0 : (p - kernel) / stride + 1;
  *last = min_idx(p / stride, out - 1);
}

#endif  // BACKPROP_CUDA_COMMON_CUH

// The CUDA built-ins backprop's kernels use, for g++, which then compiles kernels/cuda/*.cu as host
// code. This file includes no header, so the kernels see what NVRTC gives them and nothing more: a
// kernel that needed a header (INFINITY, std::...) would fail here as it would under NVRTC.
//
// A kernel becomes an ordinary function, run once per (block, thread) by launch() in launcher.h.
#ifndef BACKPROP_HARNESS_SHIM_H
#define BACKPROP_HARNESS_SHIM_H

#define __global__
#define __device__
#define __forceinline__ inline

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
static dim3 blockIdx, threadIdx, blockDim, gridDim;

// CUDA's math functions are libm's on the host (declared as glibc declares them for C++).
extern "C" {
float expf(float) noexcept;
double exp(double) noexcept;
float logf(float) noexcept;
double log(double) noexcept;
float sqrtf(float) noexcept;
double sqrt(double) noexcept;
float tanhf(float) noexcept;
double tanh(double) noexcept;
float fabsf(float) noexcept;
double fabs(double) noexcept;
}

inline float __int_as_float(int i) {
  float f;
  __builtin_memcpy(&f, &i, sizeof f);
  return f;
}
inline double __longlong_as_double(long long i) {
  double d;
  __builtin_memcpy(&d, &i, sizeof d);
  return d;
}

#endif

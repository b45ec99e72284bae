// Runs a kernel compiled with shim.h over a 1-D grid, one (block, thread) after another, with
// blockIdx/threadIdx/blockDim/gridDim set as the GPU would set them.
//
// Running threads one by one is faithful for backprop's kernels, which use neither shared memory, nor
// synchronisation, nor atomics: each thread reads inputs and writes elements that no other thread
// touches. It checks the index arithmetic, the grid-stride loops and the arguments; it says nothing
// about speed, warps, coalescing or GPU floating point (FMA contraction, CUDA's math library).
#ifndef BACKPROP_HARNESS_LAUNCHER_H
#define BACKPROP_HARNESS_LAUNCHER_H

#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

// When not empty, launch() runs only these global thread ids instead of the whole grid: probes of
// single elements of huge, lazily allocated arrays.
static std::vector<long long> only_threads;

template <typename... Params, typename... Args>
void launch(unsigned int grid, unsigned int block, void (*kernel)(Params...), Args... args) {
  gridDim.x = grid;
  blockDim.x = block;
  auto run = [&](unsigned int b, unsigned int t) {
    blockIdx.x = b;
    threadIdx.x = t;
    kernel(args...);
  };
  if (!only_threads.empty()) {
    for (long long id : only_threads) run((unsigned int)(id / block), (unsigned int)(id % block));
    return;
  }
  for (unsigned int b = 0; b < grid; ++b)
    for (unsigned int t = 0; t < block; ++t) run(b, t);
}

// The parameter list of a kernel, spelled "*f" for a float pointer, "q" for long long, and so on.
template <typename T> std::string code() {
  if constexpr (std::is_pointer_v<T>) return "*" + code<std::remove_cv_t<std::remove_pointer_t<T>>>();
  else if constexpr (std::is_same_v<T, float>) return "f";
  else if constexpr (std::is_same_v<T, double>) return "d";
  else if constexpr (std::is_same_v<T, int>) return "i";
  else if constexpr (std::is_same_v<T, long long>) return "q";
  else static_assert(sizeof(T) == 0, "a kernel parameter type the harness does not know");
}

// Launch<&kernel<float>>::run(grid, block, args...) takes the kernel's own parameters, so Python calls
// it through ctypes with the arguments kernels/cuda.py builds, after checking them against signature().
template <auto K> struct Launch;
template <typename... Params, void (*K)(Params...)> struct Launch<K> {
  static void run(unsigned int grid, unsigned int block, Params... args) { launch(grid, block, K, args...); }
  static std::string signature() { return (std::string() + ... + code<Params>()); }
};

#endif

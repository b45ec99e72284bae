// Optimizer updates, in place, one thread per parameter element. Scalars arrive already converted to
// T, and each update follows kernels/reference.py operation by operation. The step scalars (the learning
// rate, Adam's lr_t and eps_t) are read from device memory, where the optimizer writes them before each
// step: a captured CUDA graph then uses the current ones.
#include "common.cuh"

// p -= lr * g
template <typename T>
__global__ void sgd_update(T* __restrict__ p, const T* __restrict__ g, const T* __restrict__ lr_at, idx_t size) {
  const T lr = *lr_at;
  for (idx_t i = thread_index(); i < size; i += grid_stride()) p[i] -= lr * g[i];
}

// v = momentum * v + g (subnormals flushed); p -= lr * (g + momentum * v) with Nesterov, else p -= lr * v.
template <typename T>
__global__ void sgd_update_momentum(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ velocity,
                                    const T* __restrict__ lr_at, idx_t size, T momentum, int nesterov) {
  const T lr = *lr_at;
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T gi = g[i];
    const T v = flush_subnormal(velocity[i] * momentum + gi);
    velocity[i] = v;
    p[i] -= nesterov ? lr * (gi + momentum * v) : lr * v;
  }
}

// sum_sq += g^2; p -= lr * g / (sqrt(sum_sq) + eps)
template <typename T>
__global__ void adagrad_update(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sum_sq,
                               const T* __restrict__ lr_at, idx_t size, T eps) {
  const T lr = *lr_at;
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T gi = g[i], s = sum_sq[i] + gi * gi;
    sum_sq[i] = s;
    p[i] -= lr * gi / (bp_sqrt(s) + eps);
  }
}

// mean_sq = rho * mean_sq + (1 - rho) * g^2 (subnormals flushed); p -= lr * g / (sqrt(mean_sq) + eps)
template <typename T>
__global__ void rmsprop_update(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ mean_sq,
                               const T* __restrict__ lr_at, idx_t size, T rho, T one_minus_rho, T eps) {
  const T lr = *lr_at;
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T gi = g[i], s = flush_subnormal(mean_sq[i] * rho + one_minus_rho * gi * gi);
    mean_sq[i] = s;
    p[i] -= lr * gi / (bp_sqrt(s) + eps);
  }
}

// Adam with bias correction folded into lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t) and
// eps_t = eps * sqrt(1 - beta2^t), both computed once per step by adam_scalars in kernels/reference.py:
// m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2 (both with subnormals flushed);
// p -= lr_t * m / (sqrt(v) + eps_t).
template <typename T>
__global__ void adam_update(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                            const T* __restrict__ lr_t_at, const T* __restrict__ eps_t_at, idx_t size, T beta1,
                            T one_minus_beta1, T beta2, T one_minus_beta2) {
  const T lr_t = *lr_t_at, eps_t = *eps_t_at;
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T gi = g[i];
    const T mi = flush_subnormal(m[i] * beta1 + gi * one_minus_beta1);
    const T vi = flush_subnormal(v[i] * beta2 + gi * one_minus_beta2 * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] -= mi / (bp_sqrt(vi) + eps_t) * lr_t;
  }
}

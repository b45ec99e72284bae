// Elementwise activations and their gradients, one thread per element. The backward kernels take the
// forward output y, as the layers keep it; the formulas (and their order of operations) are those of
// kernels/reference.py.
#include "common.cuh"

template <typename T>
__global__ void relu(const T* __restrict__ x, T* __restrict__ y, idx_t size) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T v = x[i];
    y[i] = (v > 0 || v != v) ? v : T(0);  // max(x, 0), NaN propagating like NumPy's maximum
  }
}

// y = relu(y + b[c]) in place, y being (outer, channels, inner) in C order: a layer's bias and its ReLU.
template <typename T>
__global__ void add_bias_relu(T* __restrict__ y, const T* __restrict__ b, idx_t size, idx_t channels, idx_t inner) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T v = y[i] + b[(i / inner) % channels];
    y[i] = (v > 0 || v != v) ? v : T(0);
  }
}

// dz = (y > 0) * dout and db[c] = the sum of dz[:, c, :]: one thread per channel, which walks its rows
// in order (coalesced across channels). Meant for a Linear layer's (N, C) output, whose batch is small.
template <typename T>
__global__ void relu_bias_grad(const T* __restrict__ dout, const T* __restrict__ y, T* __restrict__ dz,
                               T* __restrict__ db, idx_t outer, idx_t channels, idx_t inner) {
  for (idx_t c = thread_index(); c < channels; c += grid_stride()) {
    T sum = 0;
    for (idx_t n = 0; n < outer; ++n) {
      for (idx_t k = 0; k < inner; ++k) {
        const idx_t i = (n * channels + c) * inner + k;
        const T d = (y[i] > 0 ? T(1) : T(0)) * dout[i];
        dz[i] = d;
        sum += d;
      }
    }
    db[c] = sum;
  }
}

template <typename T>
__global__ void relu_backward(const T* __restrict__ dout, const T* __restrict__ y, T* __restrict__ dx, idx_t size) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) dx[i] = (y[i] > 0 ? T(1) : T(0)) * dout[i];
}

// Without overflow: exp is only taken of -|x|.
template <typename T>
__global__ void sigmoid(const T* __restrict__ x, T* __restrict__ y, idx_t size) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) {
    const T v = x[i], e = bp_exp(-bp_abs(v));
    y[i] = v >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
  }
}

template <typename T>
__global__ void sigmoid_backward(const T* __restrict__ dout, const T* __restrict__ y, T* __restrict__ dx,
                                 idx_t size) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) dx[i] = dout[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
__global__ void tanh(const T* __restrict__ x, T* __restrict__ y, idx_t size) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) y[i] = bp_tanh(x[i]);
}

template <typename T>
__global__ void tanh_backward(const T* __restrict__ dout, const T* __restrict__ y, T* __restrict__ dx, idx_t size) {
  for (idx_t i = thread_index(); i < size; i += grid_stride()) dx[i] = dout[i] * (T(1) - y[i] * y[i]);
}

// Row-wise softmax, its backward, and softmax-cross-entropy (loss and gradient in one kernel).
//
// One thread per row of `cols` values, in a grid-stride loop over the rows: the classifier heads this
// library trains have a few to a few hundred classes, where a row fits one thread's loop; this keeps
// the kernels free of shared memory and synchronisation (and so checkable by the CPU harness).
#include "common.cuh"

// The largest entry of a row: every softmax below is shifted by it so exp never overflows.
template <typename T>
__device__ __forceinline__ T row_max(const T* z, idx_t cols) {
  T top = z[0];
  for (idx_t j = 1; j < cols; ++j) top = z[j] > top ? z[j] : top;
  return top;
}

// The index of a row's largest entry as NumPy's argmax gives it: the first of equal ones, and the first
// NaN if there is one (a NaN compares as the largest).
template <typename T>
__device__ __forceinline__ idx_t row_argmax(const T* z, idx_t cols) {
  idx_t best = 0;
  for (idx_t j = 1; j < cols && z[best] == z[best]; ++j) {
    if (z[j] > z[best] || z[j] != z[j]) best = j;
  }
  return best;
}

// y = exp(x - max) / sum(exp(x - max)) along each row.
template <typename T>
__global__ void softmax(const T* __restrict__ x, T* __restrict__ y, idx_t rows, idx_t cols) {
  for (idx_t r = thread_index(); r < rows; r += grid_stride()) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const T top = row_max(xr, cols);
    T sum = 0;
    for (idx_t j = 0; j < cols; ++j) {
      yr[j] = bp_exp(xr[j] - top);
      sum += yr[j];
    }
    for (idx_t j = 0; j < cols; ++j) yr[j] /= sum;
  }
}

// dx = y * (dout - <dout, y>) along each row.
template <typename T>
__global__ void softmax_backward(const T* __restrict__ dout, const T* __restrict__ y, T* __restrict__ dx,
                                 idx_t rows, idx_t cols) {
  for (idx_t r = thread_index(); r < rows; r += grid_stride()) {
    const idx_t base = r * cols;
    T dot = 0;
    for (idx_t j = 0; j < cols; ++j) dot += dout[base + j] * y[base + j];
    for (idx_t j = 0; j < cols; ++j) dx[base + j] = y[base + j] * (dout[base + j] - dot);
  }
}

// Cross-entropy of softmax(logits) against one label per row (0 <= label < cols), through
// log-sum-exp. Writes the row's loss log(sum exp(shifted)) - shifted[label] to row_loss and the row's
// gradient (softmax - onehot) / n to grad; the mean loss is the sum of row_loss divided by n. A label
// out of range makes the row's loss and gradient NaN, as in kernels/reference.py (it is never read
// through). With want_hits, hits[r] is 1 where the row's argmax is its label, else 0 (accuracy, in the
// same pass: reference.prediction_hits).
template <typename T>
__global__ void softmax_cross_entropy_labels(const T* __restrict__ logits, const long long* __restrict__ labels,
                                             T* __restrict__ grad, T* __restrict__ row_loss, T* __restrict__ hits,
                                             idx_t rows, idx_t cols, T n, int want_hits) {
  for (idx_t r = thread_index(); r < rows; r += grid_stride()) {
    const T* z = logits + r * cols;
    T* g = grad + r * cols;
    const T top = row_max(z, cols);
    T sum = 0;
    for (idx_t j = 0; j < cols; ++j) sum += bp_exp(z[j] - top);
    const long long label = labels[r];
    const bool valid = label >= 0 && label < cols;
    for (idx_t j = 0; j < cols; ++j) {
      T v = bp_exp(z[j] - top) / sum;
      if (j == label) v -= T(1);
      g[j] = valid ? v / n : quiet_nan<T>();
    }
    row_loss[r] = valid ? bp_log(sum) - (z[label] - top) : quiet_nan<T>();
    if (want_hits) hits[r] = row_argmax(z, cols) == label ? T(1) : T(0);
  }
}

// The same against probability rows: row loss sum_j target_j * (log_z - shifted_j), gradient
// (softmax - target) / n; a hit where the row's argmax is the target row's.
template <typename T>
__global__ void softmax_cross_entropy_probs(const T* __restrict__ logits, const T* __restrict__ target,
                                            T* __restrict__ grad, T* __restrict__ row_loss, T* __restrict__ hits,
                                            idx_t rows, idx_t cols, T n, int want_hits) {
  for (idx_t r = thread_index(); r < rows; r += grid_stride()) {
    const idx_t base = r * cols;
    const T* z = logits + base;
    const T top = row_max(z, cols);
    T sum = 0;
    for (idx_t j = 0; j < cols; ++j) sum += bp_exp(z[j] - top);
    const T log_z = bp_log(sum);
    T loss = 0;
    for (idx_t j = 0; j < cols; ++j) {
      const T shifted = z[j] - top;
      loss += target[base + j] * (log_z - shifted);
      grad[base + j] = (bp_exp(shifted) / sum - target[base + j]) / n;
    }
    row_loss[r] = loss;
    if (want_hits) hits[r] = row_argmax(z, cols) == row_argmax(target + base, cols) ? T(1) : T(0);
  }
}

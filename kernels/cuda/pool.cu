// 2-D max pooling over NCHW images: forward with argmax, backward in gather form (no atomics).
#include "common.cuh"

// One thread per output (n, c, oy, ox). Padding counts as -inf. argmax is the offset ky * KW + kx of
// the maximum within the window; ties keep the first offset, and a NaN in the window makes the output
// NaN (as NumPy's running maximum in kernels/reference.py does). With relu != 0 the output is the ReLU
// of the maximum (Backend.maxpool2d_relu: ReLU then pooling, in one pass).
template <typename T>
__global__ void maxpool2d(const T* __restrict__ x, T* __restrict__ out, int* __restrict__ argmax, idx_t n,
                          idx_t c, idx_t h, idx_t w, idx_t kh, idx_t kw, idx_t sh, idx_t sw, idx_t ph, idx_t pw,
                          idx_t oh, idx_t ow, int relu) {
  const idx_t total = n * c * oh * ow;
  for (idx_t i = thread_index(); i < total; i += grid_stride()) {
    idx_t q = i / ow;
    const idx_t ox = i - q * ow, oy = q % oh, plane = q / oh;  // plane = n * C + c
    const T* src = x + plane * h * w;
    T best = minus_infinity<T>();
    int arg = 0;
    for (idx_t ky = 0; ky < kh; ++ky) {
      const idx_t y = oy * sh + ky - ph;
      for (idx_t kx = 0; kx < kw; ++kx) {
        const idx_t xx = ox * sw + kx - pw;
        const T v = (y >= 0 && y < h && xx >= 0 && xx < w) ? src[y * w + xx] : minus_infinity<T>();
        if (ky == 0 && kx == 0) {
          best = v;
        } else if (v > best) {
          best = v;
          arg = (int)(ky * kw + kx);
        } else if (v != v) {
          best = v;  // NaN wins the value, not the argmax
        }
      }
    }
    out[i] = (!relu || best > 0 || best != best) ? best : T(0);  // relu as the relu kernel computes it
    argmax[i] = arg;
  }
}

// One thread per input element (n, c, y, x): the sum of dout over the windows that cover it and whose
// argmax points at it, in increasing window offset (ky, kx). With relu != 0, relu_out is the output of
// maxpool2d's relu form and each dout is multiplied by (relu_out > 0) on the way, as the reference masks it
// (so an inf or NaN gradient of a window whose output is 0 still reaches its winner as NaN).
template <typename T>
__global__ void maxpool2d_backward(const T* __restrict__ dout, const T* __restrict__ relu_out,
                                   const int* __restrict__ argmax,
                                   T* __restrict__ dx, idx_t n, idx_t c, idx_t h, idx_t w, idx_t kh, idx_t kw,
                                   idx_t sh, idx_t sw, idx_t ph, idx_t pw, idx_t oh, idx_t ow, int relu) {
  const idx_t total = n * c * h * w;
  for (idx_t i = thread_index(); i < total; i += grid_stride()) {
    idx_t q = i / w;
    const idx_t xx = i - q * w, y = q % h, plane = q / h;
    const idx_t py = y + ph, px = xx + pw;
    idx_t oy0, oy1, ox0, ox1;
    covering_outputs(py, kh, sh, oh, &oy0, &oy1);
    covering_outputs(px, kw, sw, ow, &ox0, &ox1);
    const idx_t base = plane * oh * ow;
    T sum = 0;
    for (idx_t oy = oy1; oy >= oy0; --oy) {
      const idx_t ky = py - oy * sh;
      for (idx_t ox = ox1; ox >= ox0; --ox) {
        const idx_t o = base + oy * ow + ox;
        if (argmax[o] == ky * kw + (px - ox * sw)) sum += relu ? dout[o] * (relu_out[o] > 0 ? T(1) : T(0)) : dout[o];
      }
    }
    dx[i] = sum;
  }
}

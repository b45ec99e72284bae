// Convolution lowering: im2col and its adjoint col2im (gather form, no atomics).
//
// The patch matrix has rows r = (n, oy, ox) and columns k = (c, ky, kx), as in kernels/reference.py;
// element (r, k) lives at col[r * row_stride + k * col_stride], so one kernel serves the reference's
// column-major layout (row_stride 1, col_stride N*OH*OW: every column contiguous) and the row-major
// one (row_stride C*KH*KW, col_stride 1).
#include "common.cuh"

// One thread per element of the (N*OH*OW, C*KH*KW) matrix. Consecutive threads take consecutive
// elements of memory (rows first when rows are contiguous), so the writes coalesce, and for a
// column-major matrix with stride 1 along x, so do the reads.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col, idx_t n, idx_t c, idx_t h, idx_t w,
                       idx_t kh, idx_t kw, idx_t sh, idx_t sw, idx_t ph, idx_t pw, idx_t oh, idx_t ow,
                       idx_t row_stride, idx_t col_stride) {
  const idx_t rows = n * oh * ow, cols = c * kh * kw, total = rows * cols;
  const bool rows_fastest = row_stride <= col_stride;
  for (idx_t i = thread_index(); i < total; i += grid_stride()) {
    const idx_t r = rows_fastest ? i % rows : i / cols;
    const idx_t k = rows_fastest ? i / rows : i % cols;
    idx_t q = r / ow;
    const idx_t ox = r - q * ow, oy = q % oh, img = q / oh;
    q = k / kw;
    const idx_t kx = k - q * kw, ky = q % kh, ch = q / kh;
    const idx_t y = oy * sh + ky - ph, xx = ox * sw + kx - pw;
    T v = 0;
    if (y >= 0 && y < h && xx >= 0 && xx < w) v = x[((img * c + ch) * h + y) * w + xx];
    col[r * row_stride + k * col_stride] = v;
  }
}

// One thread per image element (n, c, y, x) of the unpadded image: it sums the matrix entries that
// im2col copied from it, i.e. for every output (oy, ox) whose window covers it, the entry of row
// (n, oy, ox) and column (c, ky, kx) with ky, kx its offset in that window. Each thread writes only
// its own element, so no atomics; padding positions are never computed (they would be cropped).
// Terms are added in increasing window offset (ky, kx).
template <typename T>
__global__ void col2im(const T* __restrict__ col, T* __restrict__ img, idx_t n, idx_t c, idx_t h, idx_t w,
                       idx_t kh, idx_t kw, idx_t sh, idx_t sw, idx_t ph, idx_t pw, idx_t oh, idx_t ow,
                       idx_t row_stride, idx_t col_stride) {
  const idx_t total = n * c * h * w;
  for (idx_t i = thread_index(); i < total; i += grid_stride()) {
    idx_t q = i / w;
    const idx_t xx = i - q * w, y = q % h;
    q /= h;
    const idx_t ch = q % c, im = q / c;
    const idx_t py = y + ph, px = xx + pw;  // coordinates in the padded image
    idx_t oy0, oy1, ox0, ox1;
    covering_outputs(py, kh, sh, oh, &oy0, &oy1);
    covering_outputs(px, kw, sw, ow, &ox0, &ox1);
    T sum = 0;
    for (idx_t oy = oy1; oy >= oy0; --oy) {  // ky = py - oy * sh increases as oy decreases
      const idx_t ky = py - oy * sh;
      for (idx_t ox = ox1; ox >= ox0; --ox) {
        const idx_t kx = px - ox * sw;
        const idx_t r = (im * oh + oy) * ow + ox, k = (ch * kh + ky) * kw + kx;
        sum += col[r * row_stride + k * col_stride];
      }
    }
    img[i] = sum;
  }
}

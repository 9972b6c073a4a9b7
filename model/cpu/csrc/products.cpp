// A weight times a few rows, read once: y [O, N] = w [O, I] @ x^T for x [N, I], N <= 4.
//
// This is the product a streaming step makes most (see model/cpu/products.py). Its cost is reading the
// weight, once, from memory; MKL's kernels for it read 20 GB/s a core on the project's CPU, which
// can stream 30. Here each row of the weight is read front to back, once, and multiplied into
// every row of x as it passes, with two partial sums per column to keep the adders busy. The
// weight's rows are split between PyTorch's threads, each a contiguous run, so every thread
// streams its own part of memory.
//
// Each output's sum is taken in the same order whatever N, the threads and the other rows and
// columns are, so a row of x gives the same outputs alone or beside another.
//
// Built at run time for this machine (`-march=native`) by model/cpu/native.py.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kLanes = 16;  // floats in one vector: 64 bytes, one cache line
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef float half_vec __attribute__((vector_size(kLanes * sizeof(float) / 2)));
typedef float quarter_vec __attribute__((vector_size(kLanes * sizeof(float) / 4)));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The sum of a vector's lanes, halving it in a fixed order.
inline float lane_sum(vec v) {
  half_vec lo, hi;
  std::memcpy(&lo, &v, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
  half_vec h = lo + hi;
  quarter_vec qlo, qhi;
  std::memcpy(&qlo, &h, sizeof qlo);
  std::memcpy(&qhi, reinterpret_cast<const char*>(&h) + sizeof qlo, sizeof qhi);
  quarter_vec q = qlo + qhi;
  return (q[0] + q[2]) + (q[1] + q[3]);
}

// Rows o .. o + R - 1 of y = w @ x^T, each row's sums taken the same way whatever R.
template <int N, int R>
inline void rows_at(const float* w, const float* x, float* y, int64_t I, int64_t o) {
  vec even[R][N], odd[R][N];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n) even[r][n] = odd[r][n] = vec{};
  const float* row = w + o * I;
  int64_t i = 0;
  for (; i + 2 * kLanes <= I; i += 2 * kLanes) {
    vec a[R], b[R];
    for (int r = 0; r < R; ++r) {
      a[r] = load(row + r * I + i);
      b[r] = load(row + r * I + i + kLanes);
    }
    for (int n = 0; n < N; ++n) {
      const vec xa = load(x + n * I + i), xb = load(x + n * I + i + kLanes);
      for (int r = 0; r < R; ++r) {
        even[r][n] += a[r] * xa;
        odd[r][n] += b[r] * xb;
      }
    }
  }
  if (i + kLanes <= I) {
    for (int n = 0; n < N; ++n) {
      const vec xa = load(x + n * I + i);
      for (int r = 0; r < R; ++r) even[r][n] += load(row + r * I + i) * xa;
    }
    i += kLanes;
  }
  for (int r = 0; r < R; ++r) {
    for (int n = 0; n < N; ++n) {
      float sum = lane_sum(even[r][n] + odd[r][n]);
      for (int64_t j = i; j < I; ++j) sum += row[r * I + j] * x[n * I + j];
      y[(o + r) * N + n] = sum;
    }
  }
}

// Rows [begin, end) of y = w @ x^T. Rows are read one at a time while x stays in the L1 cache
// (16 KB of it or less); past that, four at a time, so that each load of x serves four rows
// (a 1024 x 8192 weight times two rows: 21 GB/s one at a time, 32 four at a time; a 1536 x 512
// one: 32 and 17).
template <int N>
void rows_of(const float* w, const float* x, float* y, int64_t I, int64_t begin, int64_t end) {
  int64_t o = begin;
  if (N * I > 4096)
    for (; o + 4 <= end; o += 4) rows_at<N, 4>(w, x, y, I, o);
  for (; o < end; ++o) rows_at<N, 1>(w, x, y, I, o);
}

at::Tensor weight_times_rows(const at::Tensor& weight, const at::Tensor& rows) {
  TORCH_CHECK(weight.dim() == 2 && rows.dim() == 2, "weight [O, I] and rows [N, I] expected");
  TORCH_CHECK(weight.size(1) == rows.size(1), "weight and rows differ in width");
  TORCH_CHECK(weight.device().is_cpu() && rows.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && rows.scalar_type() == at::kFloat,
              "fp32 tensors expected");
  TORCH_CHECK(weight.is_contiguous() && rows.is_contiguous(), "contiguous tensors expected");
  const int64_t O = weight.size(0), I = weight.size(1), N = rows.size(0);
  TORCH_CHECK(1 <= N && N <= 4, "1 to 4 rows expected, got ", N);
  at::Tensor y = at::empty({O, N}, weight.options());
  const float* w = weight.data_ptr<float>();
  const float* x = rows.data_ptr<float>();
  float* out = y.data_ptr<float>();
  // A thread's share is worth a fork only past ~64 KB of weight.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(I, 1));
  at::parallel_for(0, O, grain, [&](int64_t begin, int64_t end) {
    switch (N) {
      case 1: rows_of<1>(w, x, out, I, begin, end); break;
      case 2: rows_of<2>(w, x, out, I, begin, end); break;
      case 3: rows_of<3>(w, x, out, I, begin, end); break;
      default: rows_of<4>(w, x, out, I, begin, end); break;
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(moshi_desktop, m) {
  m.def("weight_times_rows(Tensor weight, Tensor rows) -> Tensor", weight_times_rows);
}

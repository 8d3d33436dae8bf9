// Token log-probabilities from hidden states × output projection on the CPU: tiles of
// kRowBlock rows × chunk vocabulary entries of logits, computed by Eigen's GEMM (multithreaded with
// OpenMP), reduced into per-row online states by the logits engine's row kernels.
#include "grpokit/linear_logprobs.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "grpokit/interrupt.hpp"
#include "grpokit/logprobs.hpp"
#include "logprobs_rows.hpp"

namespace grpokit {
namespace {

using namespace rows;

constexpr int64_t kRowBlock = 1024;
constexpr int64_t kDefaultChunk = 4096;
// Under the sampler's truncation a tile holds whole rows (the selections need the row): at most this
// many logits, so rows come in blocks of max(1, kWholeRowTile / V).
constexpr int64_t kWholeRowTile = int64_t(1) << 24;

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

void check_matrix(const TensorView& t, const char* name) {
  check_ndim(t, name, {2});
  check_dtype(t, name, {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16});
  if (t.shape[1] > 1 && t.strides[1] != 1)
    value_error(name, ": the hidden (last) dimension must have stride 1, got stride ", t.strides[1]);
}

void check_per_token(const TensorView& t, const char* name, const TensorView& hidden,
                     std::initializer_list<DType> dtypes, bool writable) {
  check_ndim(t, name, {1});
  if (t.shape[0] != hidden.shape[0])
    value_error(name, ": expected shape (", hidden.shape[0], ",) (one per row of hidden), got ",
                t.shape_str());
  check_dtype(t, name, dtypes);
  check_same_device(t, name, hidden, "hidden");
  if (writable) check_writable(t, name);
}

DType result_dtype(DType d) { return d == DType::Float64 ? DType::Float64 : DType::Float32; }

void check_common(const LinearLogprobArgs& in) {
  check_matrix(in.hidden, "hidden");
  check_matrix(in.weight, "weight");
  check_dtype(in.weight, "weight", {in.hidden.dtype});
  check_same_device(in.weight, "weight", in.hidden, "hidden");
  if (in.weight.shape[1] != in.hidden.shape[1])
    value_error("weight: expected shape (V, ", in.hidden.shape[1], ") (the hidden size of hidden), got ",
                in.weight.shape_str());
  if (in.weight.shape[0] == 0) value_error("weight: the vocabulary dimension is empty");
  if (!(in.temperature > 0.0) || std::isinf(in.temperature))
    value_error("temperature: expected a finite value > 0, got ", in.temperature);
  if (in.chunk_size < 0) value_error("chunk_size: expected a positive integer, got ", in.chunk_size);
  check_per_token(in.token_ids, "token_ids", in.hidden, {DType::Int32, DType::Int64}, false);
}

int64_t chunk_of(const LinearLogprobArgs& in) {
  const int64_t c = in.chunk_size > 0 ? in.chunk_size : kDefaultChunk;
  return std::min<int64_t>(c, in.weight.shape[0]);
}

void require_cpu_dtype(const TensorView& hidden) {
  check_cpu(hidden, "hidden");
  if (hidden.dtype != DType::Float32 && hidden.dtype != DType::Float64)
    not_implemented("hidden: ", dtype_name(hidden.dtype),
                    " hidden states are supported on the GPU; on the CPU pass float32 or float64");
}

void check_ids(const TensorView& ids, int64_t vocab) {
  RowError err;
  for (int64_t r = 0; r < ids.shape[0]; ++r) {
    const int64_t id = read_id(ids, r * ids.strides[0]);
    if (id < 0 || id >= vocab) {
      err.record(r, 1, id);
      break;
    }
  }
  err.raise(vocab);
}

// The logits hidden · weightᵀ, a tile (up to kRowBlock rows × one vocabulary chunk) at a time in one
// reused buffer: never the whole (N, V) matrix.
template <class T>
struct LogitTiles {
  const int64_t N, H, V, chunk, nb;
  const ConstMap<T> hid, w;
  RowMat<T> tile;

  // whole_rows: tiles of complete rows (chunk = V) in blocks of kWholeRowTile / V rows.
  explicit LogitTiles(const LinearLogprobArgs& in, bool whole_rows = false)
      : N(in.hidden.shape[0]),
        H(in.hidden.shape[1]),
        V(in.weight.shape[0]),
        chunk(whole_rows ? V : chunk_of(in)),
        nb(std::min(N,
                    whole_rows ? std::max<int64_t>(1, std::min(kRowBlock, kWholeRowTile / V)) : kRowBlock)),
        hid(in.hidden.ptr<const T>(), N, H, Eigen::OuterStride<>(in.hidden.strides[0])),
        w(in.weight.ptr<const T>(), V, H, Eigen::OuterStride<>(in.weight.strides[0])),
        tile(nb, chunk) {}

  // Calls f(r0, nr, v0, nv, z) with z the computed logits of rows [r0, r0 + nr) and vocabulary entries
  // [v0, v0 + nv) (row i at z.data() + i * chunk): row blocks in order, each block's chunks in order.
  template <class Fn>
  void for_each(Fn&& f) {
    Interrupt stop;  // Ctrl-C (grpokit/interrupt.hpp), checked between tiles
    for (int64_t r0 = 0; r0 < N; r0 += nb) {
      const int64_t nr = std::min(nb, N - r0);
      for (int64_t v0 = 0; v0 < V; v0 += chunk) {
        stop.poll();
        const int64_t nv = std::min(chunk, V - v0);
        MutMap<T> z(tile.data(), nr, nv, Eigen::OuterStride<>(chunk));
        z.noalias() = hid.middleRows(r0, nr) * w.middleRows(v0, nv).transpose();
        f(r0, nr, v0, nv, z);
      }
    }
  }
};

template <class T, bool kSq>
void forward(const LinearLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
             const TensorView& lse, const TensorView& sum_sq) {
  LogitTiles<T> tiles(in);
  const double inv_t = 1.0 / in.temperature;
  std::vector<math::RowState<double, kSq>> st(static_cast<size_t>(tiles.nb));
  std::vector<double> x_y(static_cast<size_t>(tiles.nb)), raw_max(static_cast<size_t>(tiles.nb));
  RowError err;
  tiles.for_each([&](int64_t r0, int64_t nr, int64_t v0, int64_t nv, MutMap<T>& z) {
    if (v0 == 0) std::fill(st.begin(), st.end(), math::RowState<double, kSq>{});
    if (v0 == 0) std::fill(raw_max.begin(), raw_max.end(), -INFINITY);
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp parallel for schedule(static) if (nr * nv > kParallelMin)
#endif
    for (int64_t i = 0; i < nr; ++i) {
      const T* row = z.data() + i * tiles.chunk;
      accumulate_row<T>(st[i], row, nv, inv_t, &raw_max[i]);
      const int64_t id = read_id(in.token_ids, (r0 + i) * in.token_ids.strides[0]);
      if (id >= v0 && id < v0 + nv) x_y[i] = static_cast<double>(row[id - v0]);
    }
    if (v0 + nv < tiles.V) return;  // the block's rows are complete after its last chunk
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t r = r0 + i;
      const double l = st[i].lse();
      err.finite_lse(r, l);  // written all the same: the error is raised after the loop
      write_real<T>(logp, r * logp.strides[0], row_logp(st[i], raw_max[i], x_y[i], inv_t));
      write_real<T>(lse, r * lse.strides[0], l);
      if (entropy.defined()) write_real<T>(entropy, r * entropy.strides[0], st[i].entropy());
      if constexpr (kSq) write_real<T>(sum_sq, r * sum_sq.strides[0], st[i].sum_sq_probs());
    }
  });
  err.raise(tiles.V);
}

template <class T>
void backward(const LinearLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
              const TensorView& grad_logp, const TensorView& grad_entropy, const TensorView& grad_hidden,
              const TensorView& grad_weight) {
  LogitTiles<T> tiles(in);
  const int64_t N = tiles.N, H = tiles.H, V = tiles.V;
  const double inv_t = 1.0 / in.temperature;
  MutMap<T> gh(grad_hidden.defined() ? grad_hidden.ptr<T>() : nullptr, N, H, Eigen::OuterStride<>(H));
  MutMap<T> gw(grad_weight.defined() ? grad_weight.ptr<T>() : nullptr, V, H, Eigen::OuterStride<>(H));
  if (grad_hidden.defined()) gh.setZero();
  if (grad_weight.defined()) gw.setZero();
  tiles.for_each([&](int64_t r0, int64_t nr, int64_t v0, int64_t nv, MutMap<T>& z) {
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp parallel for schedule(static) if (nr * nv > kParallelMin)
#endif
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t r = r0 + i;
      const double a = grad_logp.defined() ? read_real(grad_logp, r * grad_logp.strides[0]) : 0.0;
      const double b = grad_entropy.defined() ? read_real(grad_entropy, r * grad_entropy.strides[0]) : 0.0;
      const double h = grad_entropy.defined() ? read_real(entropy, r * entropy.strides[0]) : 0.0;
      const auto c = math::grad_coeffs<T, double>(a, b, h, inv_t);
      const int64_t id = read_id(in.token_ids, r * in.token_ids.strides[0]);
      T* row = z.data() + i * tiles.chunk;
      const bool here = id >= v0 && id < v0 + nv;
      // A tile holds part of a row, so the gradient always works from the saved lse (docs/logprobs.md).
      const GradShift s{0.0, read_real(lse, r * lse.strides[0])};
      grad_row(row, row, nv, inv_t, s, c, here ? id - v0 : -1,
               here ? static_cast<double>(row[id - v0]) : 0.0);
    }
    // The tile now holds ∂L/∂logits for its rows and vocabulary entries.
    if (grad_hidden.defined()) gh.middleRows(r0, nr).noalias() += z * tiles.w.middleRows(v0, nv);
    if (grad_weight.defined())
      gw.middleRows(v0, nv).noalias() += z.transpose() * tiles.hid.middleRows(r0, nr);
  });
}

// Rows [r0, r0 + n) of a per-row (N,) view (undefined stays undefined).
TensorView rows_of(TensorView t, int64_t r0, int64_t n) {
  if (!t.defined()) return t;
  t.data = static_cast<char*>(t.data) + r0 * t.strides[0] * dtype_size(t.dtype);
  t.shape[0] = n;
  return t;
}

// A tile of whole rows as the logits engine's (nr, V) input, with rows r0.. of the per-row arrays.
template <class T>
TokenLogprobArgs tile_args(const LinearLogprobArgs& in, MutMap<T>& z, int64_t r0, int64_t nr, int64_t V) {
  TokenLogprobArgs a;
  a.logits = make_view(z.data(), in.hidden.dtype, {nr, V});
  a.token_ids = rows_of(in.token_ids, r0, nr);
  a.temperature = in.temperature;
  return a;
}

// Runs f(a, r0, nr) on each tile of whole rows in hidden's dtype, a the tile as the logits engine's
// (nr, V) input with rows r0.. of token_ids; an error of the logits engine names the row of hidden.
// With grad_hidden / grad_weight defined (the backward), f turns the tile into ∂L/∂logits in place and
// the two GEMMs follow.
template <class Fn>
void for_each_row_block(const LinearLogprobArgs& in, Fn&& f, const TensorView& grad_hidden = TensorView{},
                        const TensorView& grad_weight = TensorView{}) {
  auto run = [&](auto zero) {
    using T = decltype(zero);
    LogitTiles<T> t(in, true);
    MutMap<T> gh(grad_hidden.defined() ? grad_hidden.ptr<T>() : nullptr, t.N, t.H, Eigen::OuterStride<>(t.H));
    MutMap<T> gw(grad_weight.defined() ? grad_weight.ptr<T>() : nullptr, t.V, t.H, Eigen::OuterStride<>(t.H));
    if (grad_hidden.defined()) gh.setZero();
    if (grad_weight.defined()) gw.setZero();
    t.for_each([&](int64_t r0, int64_t nr, int64_t, int64_t, MutMap<T>& z) {
      try {
        f(tile_args(in, z, r0, nr, t.V), r0, nr);
      } catch (const Error& e) {
        throw Error(e.kind(), std::string("hidden rows from ") + std::to_string(r0) +
                                  " (row numbers below count from there): " + e.what());
      }
      if (grad_hidden.defined()) gh.middleRows(r0, nr).noalias() += z * t.w;
      if (grad_weight.defined()) gw.noalias() += z.transpose() * t.hid.middleRows(r0, nr);
    });
  };
  if (in.hidden.dtype == DType::Float32)
    run(float{});
  else
    run(double{});
}

SamplerArgs sampler_rows(const SamplerArgs& s, int64_t r0, int64_t n) {
  SamplerArgs b = s;
  b.top_k = rows_of(s.top_k, r0, n), b.top_p = rows_of(s.top_p, r0, n), b.min_p = rows_of(s.min_p, r0, n);
  return b;
}

// Rows [r0, r0 + n) of a kept set as the logits engine reads it: their ids, and their offsets rebased
// to start at 0 (into off, n + 1 entries).
KeepArgs keep_rows(const KeepArgs& k, int64_t r0, int64_t n, std::vector<int64_t>& off) {
  off.resize(static_cast<size_t>(n + 1));
  const int64_t base = read_id(k.offsets, r0 * k.offsets.strides[0]);
  for (int64_t i = 0; i <= n; ++i)
    off[static_cast<size_t>(i)] = read_id(k.offsets, (r0 + i) * k.offsets.strides[0]) - base;
  KeepArgs b = k;
  b.ids.data = static_cast<char*>(k.ids.data) + base * k.ids.strides[0] * dtype_size(k.ids.dtype);
  b.ids.shape[0] = off.back();
  b.offsets = make_view(off.data(), DType::Int64, {n + 1});
  return b;
}

// The kept set's arrays against hidden, and their values (before any tile, so errors name hidden's rows).
void check_keep(const LinearLogprobArgs& in, const KeepArgs& k) {
  check_keep_shapes(k, in.hidden.shape[0], in.hidden, "hidden");
  check_keep_values(k, in.hidden.shape[0], in.weight.shape[0]);
}

}  // namespace

void linear_token_logprobs_sampler_cpu(const LinearLogprobArgs& in, const SamplerArgs& s,
                                       const TensorView& logp, const TensorView& entropy,
                                       const TensorView& lse, const TensorView& kept_logmass,
                                       const TensorView& keep_min) {
  check_linear_token_logprobs_args(in, logp, entropy, lse);
  check_linear_token_logprobs_args(in, kept_logmass, TensorView{}, keep_min);
  require_cpu_dtype(in.hidden);
  check_ids(in.token_ids, in.weight.shape[0]);
  for_each_row_block(in, [&](const TokenLogprobArgs& a, int64_t r0, int64_t nr) {
    token_logprobs_sampler_cpu(a, sampler_rows(s, r0, nr), rows_of(logp, r0, nr), rows_of(entropy, r0, nr),
                               rows_of(lse, r0, nr), rows_of(kept_logmass, r0, nr),
                               rows_of(keep_min, r0, nr));
  });
}

void linear_token_logprobs_sampler_backward_cpu(const LinearLogprobArgs& in, bool entropy_over_kept,
                                                const TensorView& lse, const TensorView& kept_logmass,
                                                const TensorView& keep_min, const TensorView& entropy,
                                                const TensorView& grad_logp, const TensorView& grad_entropy,
                                                const TensorView& grad_hidden,
                                                const TensorView& grad_weight) {
  check_linear_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_hidden,
                                            grad_weight);
  check_linear_token_logprobs_args(in, kept_logmass, TensorView{}, keep_min);
  require_cpu_dtype(in.hidden);
  check_ids(in.token_ids, in.weight.shape[0]);
  for_each_row_block(
      in,
      [&](const TokenLogprobArgs& a, int64_t r0, int64_t nr) {
        token_logprobs_sampler_backward_cpu(a, entropy_over_kept, rows_of(lse, r0, nr),
                                            rows_of(kept_logmass, r0, nr), rows_of(keep_min, r0, nr),
                                            rows_of(entropy, r0, nr), rows_of(grad_logp, r0, nr),
                                            rows_of(grad_entropy, r0, nr), a.logits);
      },
      grad_hidden, grad_weight);
}

void linear_token_logprobs_keep_cpu(const LinearLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                                    const TensorView& entropy, const TensorView& lse,
                                    const TensorView& kept_logmass) {
  check_linear_token_logprobs_args(in, logp, entropy, lse);
  check_linear_token_logprobs_args(in, kept_logmass, TensorView{}, kept_logmass);
  require_cpu_dtype(in.hidden);
  check_ids(in.token_ids, in.weight.shape[0]);
  check_keep(in, k);
  std::vector<int64_t> off;
  for_each_row_block(in, [&](const TokenLogprobArgs& a, int64_t r0, int64_t nr) {
    token_logprobs_keep_cpu(a, keep_rows(k, r0, nr, off), rows_of(logp, r0, nr), rows_of(entropy, r0, nr),
                            rows_of(lse, r0, nr), rows_of(kept_logmass, r0, nr));
  });
}

void linear_token_logprobs_keep_backward_cpu(const LinearLogprobArgs& in, const KeepArgs& k,
                                             const TensorView& lse, const TensorView& kept_logmass,
                                             const TensorView& entropy, const TensorView& grad_logp,
                                             const TensorView& grad_entropy, const TensorView& grad_hidden,
                                             const TensorView& grad_weight) {
  check_linear_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_hidden,
                                            grad_weight);
  check_linear_token_logprobs_args(in, kept_logmass, TensorView{}, kept_logmass);
  require_cpu_dtype(in.hidden);
  check_ids(in.token_ids, in.weight.shape[0]);
  check_keep(in, k);
  std::vector<int64_t> off;
  for_each_row_block(
      in,
      [&](const TokenLogprobArgs& a, int64_t r0, int64_t nr) {
        token_logprobs_keep_backward_cpu(a, keep_rows(k, r0, nr, off), rows_of(lse, r0, nr),
                                         rows_of(kept_logmass, r0, nr), rows_of(entropy, r0, nr),
                                         rows_of(grad_logp, r0, nr), rows_of(grad_entropy, r0, nr), a.logits);
      },
      grad_hidden, grad_weight);
}

void check_linear_token_logprobs_args(const LinearLogprobArgs& in, const TensorView& logp,
                                      const TensorView& entropy, const TensorView& lse,
                                      const TensorView& sum_sq_probs) {
  check_common(in);
  const DType rd = result_dtype(in.hidden.dtype);
  check_per_token(logp, "logp", in.hidden, {rd}, true);
  check_per_token(lse, "lse", in.hidden, {rd}, true);
  if (entropy.defined()) check_per_token(entropy, "entropy", in.hidden, {rd}, true);
  if (sum_sq_probs.defined()) check_per_token(sum_sq_probs, "sum_sq_probs", in.hidden, {rd}, true);
}

void check_linear_token_logprobs_backward_args(const LinearLogprobArgs& in, const TensorView& lse,
                                               const TensorView& entropy, const TensorView& grad_logp,
                                               const TensorView& grad_entropy, const TensorView& grad_hidden,
                                               const TensorView& grad_weight) {
  check_common(in);
  const DType rd = result_dtype(in.hidden.dtype);
  check_per_token(lse, "lse", in.hidden, {rd}, false);
  if (grad_logp.defined())
    check_per_token(grad_logp, "grad_logp", in.hidden, {DType::Float32, DType::Float64}, false);
  if (grad_entropy.defined()) {
    check_per_token(grad_entropy, "grad_entropy", in.hidden, {DType::Float32, DType::Float64}, false);
    if (!entropy.defined())
      value_error(
          "entropy: the forward's entropy is needed for a gradient through the entropy; "
          "run the forward with entropy=True");
    check_per_token(entropy, "entropy", in.hidden, {rd}, false);
  }
  auto check_grad = [&](const TensorView& g, const char* name, const TensorView& ref, const char* ref_name) {
    if (!g.defined()) return;
    check_shape_equal(g, name, ref, ref_name);
    check_dtype(g, name, {in.hidden.dtype});
    check_same_device(g, name, in.hidden, "hidden");
    check_writable(g, name);
    if (!g.is_contiguous()) value_error(name, ": expected a contiguous array");
  };
  check_grad(grad_hidden, "grad_hidden", in.hidden, "hidden");
  check_grad(grad_weight, "grad_weight", in.weight, "weight");
}

void linear_token_logprobs_cpu(const LinearLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                               const TensorView& lse, const TensorView& sum_sq_probs) {
  check_linear_token_logprobs_args(in, logp, entropy, lse, sum_sq_probs);
  require_cpu_dtype(in.hidden);
  check_ids(in.token_ids, in.weight.shape[0]);
  const bool sq = sum_sq_probs.defined();  // Σπ²: its own instantiation, the default one unchanged
  if (in.hidden.dtype == DType::Float32)
    sq ? forward<float, true>(in, logp, entropy, lse, sum_sq_probs)
       : forward<float, false>(in, logp, entropy, lse, sum_sq_probs);
  else
    sq ? forward<double, true>(in, logp, entropy, lse, sum_sq_probs)
       : forward<double, false>(in, logp, entropy, lse, sum_sq_probs);
}

void linear_token_logprobs_backward_cpu(const LinearLogprobArgs& in, const TensorView& lse,
                                        const TensorView& entropy, const TensorView& grad_logp,
                                        const TensorView& grad_entropy, const TensorView& grad_hidden,
                                        const TensorView& grad_weight) {
  check_linear_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_hidden,
                                            grad_weight);
  require_cpu_dtype(in.hidden);
  check_ids(in.token_ids, in.weight.shape[0]);
  if (in.hidden.dtype == DType::Float32)
    backward<float>(in, lse, entropy, grad_logp, grad_entropy, grad_hidden, grad_weight);
  else
    backward<double>(in, lse, entropy, grad_logp, grad_entropy, grad_hidden, grad_weight);
}

}  // namespace grpokit

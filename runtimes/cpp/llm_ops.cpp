// ExecuTorch's LLM custom ops, for the runner: llama::update_cache, update_cache_with_indices,
// custom_sdpa and custom_quantized_sdpa (out variants, the schemas of executorch 1.5.1's
// extension/llm/custom_ops). The wheel ships them only inside a Python extension that links
// libtorch, so without these a causal LM built with the default --lm-ops custom could not load
// here. Registered when the runner starts (EXECUTORCH_LIBRARY's static initialisers).
//
// Layouts, as ExecuTorch's own kernels take them: query, key and value [B, S, H, D] (with
// is_seq_at_dim_2, [B, H, S, D]); caches [B, max_S, H_kv, D]; grouped-query attention (query
// head h reads key head h / (H / H_kv)); keys up to start_pos + S, causal from start_pos, or
// every key under a float additive mask [S, keys]. The int8 forms carry a float scale and an
// int8 zero point per (token, head): x = scale * (code - zero). Scores and the softmax are fp32.
#ifndef ET_USE_THREADPOOL
#define ET_USE_THREADPOOL  // parallel_for from libexecutorch_threadpool, which the runner links
#endif

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;
using std::optional;

bool contiguous(const Tensor& t) {
  int64_t want = 1;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    if (t.size(d) != 1 && t.strides()[d] != want) return false;
    want *= t.size(d);
  }
  return true;
}

// value [B, S, H, D] into cache [B, max_S, H, D] at rows start_pos.. (or at indices [B, S]).
Tensor& write_cache(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                    const Tensor* indices, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, value.dim() == 4 && cache.dim() == 4, InvalidArgument, out, "update_cache: value and cache must be 4-D");
  ET_KERNEL_CHECK_MSG(ctx, value.size(0) == cache.size(0) && value.size(2) == cache.size(2) && value.size(3) == cache.size(3),
                      InvalidArgument, out, "update_cache: value and cache differ in batch, heads or head size");
  ET_KERNEL_CHECK_MSG(ctx, value.element_size() == cache.element_size() && contiguous(value) && contiguous(cache),
                      InvalidArgument, out, "update_cache: value and cache must be contiguous, of one element size");
  const int64_t batch = value.size(0), seq = value.size(1), slots = cache.size(1);
  const size_t row = static_cast<size_t>(value.size(2) * value.size(3)) * value.element_size();
  const auto* src = static_cast<const uint8_t*>(value.const_data_ptr());
  auto* dst = static_cast<uint8_t*>(cache.mutable_data_ptr());
  const int64_t* idx = nullptr;
  if (indices != nullptr) {
    ET_KERNEL_CHECK_MSG(ctx, indices->scalar_type() == ScalarType::Long && indices->dim() == 2 && indices->size(0) == batch &&
                        indices->size(1) == seq && contiguous(*indices), InvalidArgument, out,
                        "update_cache_with_indices: indices must be int64 [batch, seq_len], contiguous");
    idx = indices->const_data_ptr<int64_t>();
  } else {
    ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + seq <= slots, InvalidArgument, out,
                        "update_cache: start_pos %" PRId64 " + %" PRId64 " tokens exceeds the cache's %" PRId64 " rows",
                        start_pos, seq, slots);
  }
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < seq; ++s) {
      const int64_t at = idx ? idx[b * seq + s] : start_pos + s;
      ET_KERNEL_CHECK_MSG(ctx, at >= 0 && at < slots, InvalidArgument, out,
                          "update_cache_with_indices: index %" PRId64 " is outside the cache's %" PRId64 " rows", at, slots);
      std::memcpy(dst + (b * slots + at) * row, src + (b * seq + s) * row, row);
    }
  }
  return out;  // a placeholder, as in ExecuTorch: the cache is written in place
}

Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos, Tensor& out) {
  return write_cache(ctx, value, cache, start_pos, nullptr, out);
}

Tensor& update_cache_with_indices_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                                      const Tensor& indices, Tensor& out) {
  (void)start_pos;  // the indices say where
  return write_cache(ctx, value, cache, start_pos, &indices, out);
}

// One [B, S, H, D] operand (or [B, H, S, D] with seq_at_dim_2): fp32, or int8 codes with a float
// scale and an int8 zero point per (b, s, h).
struct Operand {
  const float* f = nullptr;
  const int8_t* codes = nullptr;
  const float* scale = nullptr;
  const int8_t* zero = nullptr;
  int64_t sb = 0, ss = 0, sh = 0;     // element strides of batch, sequence, head
  int64_t pb = 0, ps = 0, ph = 0;     // the same for scale and zero point
  int64_t offset(int64_t b, int64_t s, int64_t h) const { return b * sb + s * ss + h * sh; }
  int64_t qoffset(int64_t b, int64_t s, int64_t h) const { return b * pb + s * ps + h * ph; }
};

Operand operand(const Tensor& t, const optional<Tensor>& zero, const optional<Tensor>& scale, bool seq_at_2) {
  Operand o;
  const int sd = seq_at_2 ? 2 : 1, hd = seq_at_2 ? 1 : 2;
  o.sb = t.strides()[0], o.ss = t.strides()[sd], o.sh = t.strides()[hd];
  if (t.scalar_type() == ScalarType::Float) {
    o.f = t.const_data_ptr<float>();
  } else {
    o.codes = t.const_data_ptr<int8_t>();
    o.scale = scale->const_data_ptr<float>();
    o.zero = zero->const_data_ptr<int8_t>();
    o.pb = scale->strides()[0], o.ps = scale->strides()[sd], o.ph = scale->strides()[hd];
  }
  return o;
}

bool quant_params_fit(const Tensor& t, const optional<Tensor>& zero, const optional<Tensor>& scale) {
  if (t.scalar_type() == ScalarType::Float) return true;
  if (t.scalar_type() != ScalarType::Char || !zero || !scale) return false;
  if (scale->scalar_type() != ScalarType::Float || zero->scalar_type() != ScalarType::Char) return false;
  if (scale->dim() != 4 || zero->dim() != 4 || scale->size(3) != 1) return false;
  for (int d = 0; d < 3; ++d)
    if (scale->size(d) != t.size(d) || zero->size(d) != t.size(d) || scale->strides()[d] != zero->strides()[d]) return false;
  return true;
}

// The cache's rows, vectorised: W-float vectors (GCC/Clang vector extensions; SSE2 or NEON 4-wide
// everywhere, AVX2+FMA 8-wide where the x86-64 CPU has it, chosen when the runner starts), over an
// fp32 cache or an int8 one (its codes widened in registers, never dequantized in memory). The
// scalar loop in attend() was latency-bound, not memory-bound: one accumulator per dot product and
// the value sum stored to memory each key cost ~11 µs a key of context on SmolLM2 (30 layers, 9
// heads), half of decode at 600 keys. Here four keys' scores run as independent chains and the
// D-float value sum stays in registers.
typedef float F32x4 __attribute__((vector_size(16)));
typedef float F32x8 __attribute__((vector_size(32)));
#define EF_INLINE inline __attribute__((always_inline))

template <typename Vec>
EF_INLINE float lanes_sum(Vec a) {
  float s = 0;
  for (unsigned i = 0; i < sizeof(Vec) / sizeof(float); ++i) s += a[i];
  return s;
}

// An unaligned load of one vector from fp32 values or int8 codes (a template argument loses a
// typedef's aligned(4), so memcpy).
template <typename Vec>
EF_INLINE Vec load(const float* x) {
  Vec r;
  std::memcpy(&r, x, sizeof r);
  return r;
}
// int8 codes widened with the ISA's sign extensions: GCC 12 turns __builtin_convertvector of
// int8 vectors into one scalar conversion per lane (measured slower than the scalar loop).
template <typename Vec>
EF_INLINE Vec load(const int8_t* x);
template <>
EF_INLINE F32x4 load<F32x4>(const int8_t* x) {
  int32_t four;
  std::memcpy(&four, x, sizeof four);
#if defined(__x86_64__)
  __m128i b = _mm_cvtsi32_si128(four);
  b = _mm_unpacklo_epi8(b, b);
  b = _mm_unpacklo_epi16(b, b);  // each code in the top byte of its lane, then shifted down with its sign
  return (F32x4)_mm_cvtepi32_ps(_mm_srai_epi32(b, 24));
#elif defined(__aarch64__)
  const int16x8_t h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(four)));
  return (F32x4)vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
#else
  return F32x4{float(x[0]), float(x[1]), float(x[2]), float(x[3])};
#endif
}
#if defined(__x86_64__)
template <>  // not always_inline (attend_rows<F32x8> has the default target): rows_avx2 flattens it in
__attribute__((target("avx2"))) inline F32x8 load<F32x8>(const int8_t* x) {
  return (F32x8)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x))));
}
#endif

// One kv head's rows of a cache: row j at data + j·stride elements; an int8 cache's scale and
// zero point of row j at j·qstride.
struct CacheRows {
  const void* data;
  int64_t stride;
  const float* scale = nullptr;
  const int8_t* zero = nullptr;
  int64_t qstride = 0;
};

// One query row q [D] (already times the softmax factor; qsum its sum) over `last` keys; p holds
// the scores; out [D] = softmax(q·k + mask) · v. T: the cache's element type.
template <typename Vec, int D, typename T>
EF_INLINE void attend_rows(const float* q, float qsum, const CacheRows& K, const CacheRows& V, int64_t last,
                           const float* mask, int64_t mcol, float* p, float* out) {
  constexpr int L = sizeof(Vec) / sizeof(float), N = D / L;
  static_assert(D % L == 0, "the head size must be a multiple of the vector width");
  constexpr bool codes = std::is_same<T, int8_t>::value;
  const T* k = static_cast<const T*>(K.data);
  const T* v = static_cast<const T*>(V.data);
  const int64_t ks = K.stride, vs = V.stride;
  Vec qv[N];
  for (int c = 0; c < N; ++c) qv[c] = load<Vec>(q + c * L);
  int64_t j = 0;
  for (; j + 4 <= last; j += 4) {
    const T* r = k + j * ks;
    Vec a0 = qv[0] * load<Vec>(r), a1 = qv[0] * load<Vec>(r + ks), a2 = qv[0] * load<Vec>(r + 2 * ks),
        a3 = qv[0] * load<Vec>(r + 3 * ks);
    for (int c = 1; c < N; ++c) {
      a0 += qv[c] * load<Vec>(r + c * L), a1 += qv[c] * load<Vec>(r + ks + c * L);
      a2 += qv[c] * load<Vec>(r + 2 * ks + c * L), a3 += qv[c] * load<Vec>(r + 3 * ks + c * L);
    }
    p[j] = lanes_sum(a0), p[j + 1] = lanes_sum(a1), p[j + 2] = lanes_sum(a2), p[j + 3] = lanes_sum(a3);
  }
  for (; j < last; ++j) {
    const T* r = k + j * ks;
    Vec a = qv[0] * load<Vec>(r);
    for (int c = 1; c < N; ++c) a += qv[c] * load<Vec>(r + c * L);
    p[j] = lanes_sum(a);
  }
  float top = -std::numeric_limits<float>::infinity();
  for (j = 0; j < last; ++j) {
    if (codes) p[j] = K.scale[j * K.qstride] * (p[j] - static_cast<float>(K.zero[j * K.qstride]) * qsum);  // s·(q·codes − z·Σq)
    top = std::max(top, p[j] += mask ? mask[j * mcol] : 0.0f);
  }
  float total = 0;
  for (j = 0; j < last; ++j) total += (p[j] = std::exp(p[j] - top));
  Vec acc[N] = {};
  float shift = 0;  // Σ pⱼ·sⱼ·zeroⱼ of an int8 cache's values, taken off once at the end
  for (j = 0; j < last; ++j) {
    float w = p[j];
    if (codes) {
      w *= V.scale[j * V.qstride];
      shift += w * static_cast<float>(V.zero[j * V.qstride]);
    }
    const T* r = v + j * vs;
    for (int c = 0; c < N; ++c) acc[c] += w * load<Vec>(r + c * L);
  }
  const float inv = 1.0f / total;
  for (int c = 0; c < N; ++c) {
    const Vec o = (acc[c] - shift) * inv;
    std::memcpy(out + c * L, &o, sizeof o);
  }
}

using RowsFn = void (*)(const float*, float, const CacheRows&, const CacheRows&, int64_t, const float*, int64_t, float*, float*);

template <int D, typename T>
void rows_base(const float* q, float qsum, const CacheRows& k, const CacheRows& v, int64_t last, const float* mask,
               int64_t mcol, float* p, float* out) {
  attend_rows<F32x4, D, T>(q, qsum, k, v, last, mask, mcol, p, out);
}

#if defined(__x86_64__)
template <int D, typename T>
__attribute__((target("avx2,fma"), flatten)) void rows_avx2(const float* q, float qsum, const CacheRows& k, const CacheRows& v,
                                                   int64_t last, const float* mask, int64_t mcol, float* p, float* out) {
  attend_rows<F32x8, D, T>(q, qsum, k, v, last, mask, mcol, p, out);
}
#endif

template <typename T>
RowsFn rows_for(int64_t dim) {
#if defined(__x86_64__)
  // EDGEFORMER_RUNNER_NO_AVX2=1: the SSE2 kernels, as a CPU without AVX2 runs them (tests/devices/test_runner.py)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           std::getenv("EDGEFORMER_RUNNER_NO_AVX2") == nullptr;
  if (avx2) {
    switch (dim) {
      case 16: return rows_avx2<16, T>;
      case 32: return rows_avx2<32, T>;
      case 64: return rows_avx2<64, T>;
      case 128: return rows_avx2<128, T>;
    }
  }
#endif
  switch (dim) {
    case 16: return rows_base<16, T>;
    case 32: return rows_base<32, T>;
    case 64: return rows_base<64, T>;
    case 128: return rows_base<128, T>;
  }
  return nullptr;
}

// The vectorised kernel for head size `dim` over an fp32 (or int8) cache, or null where only the
// scalar loop serves.
RowsFn rows_kernel(int64_t dim, bool int8_cache) { return int8_cache ? rows_for<int8_t>(dim) : rows_for<float>(dim); }

// Batch b, kv head g of a cache operand, as the vectorised kernels read it.
CacheRows rows_of(const Operand& o, int64_t b, int64_t g) {
  if (o.f) return CacheRows{o.f + o.offset(b, 0, g), o.ss};
  return CacheRows{o.codes + o.offset(b, 0, g), o.ss, o.scale + o.qoffset(b, 0, g), o.zero + o.qoffset(b, 0, g), o.ps};
}

struct Job {
  Operand Q, K, V, O;
  float* o_data;
  const float* m;  // additive mask [seq, keys] or null
  int64_t m_row, m_col;
  float factor;
  int64_t start_pos, keys, seq, heads, group, dim;
  bool causal;
  RowsFn rows;  // the vectorised kernel for this head size and cache, or null
};

// Tasks [begin, end) of (batch, query token, query head): one pass over the keys it may read;
// through rows_kernel where the head size is 16/32/64/128, else the scalar loop below. Tried
// earlier on the scalar loop and not kept (none faster): an AVX2 clone of it; a key group's query
// heads reading each key row once, decode's keys split across threads and merged by their softmax
// maxima; subnormal softmax weights flushed to 0. What it lacked was independent accumulators:
// perf had read its stalls as loads of cache rows.
void attend(const Job& job, int64_t begin, int64_t end) {
  const Operand &Q = job.Q, &K = job.K, &V = job.V, &O = job.O;
  const int64_t dim = job.dim, keys = job.keys, heads = job.heads, seq = job.seq;
  std::vector<float> query(dim), acc(dim), p(keys);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task % heads, s = (task / heads) % seq, b = task / (heads * seq), g = h / job.group;
    const int64_t qo = Q.offset(b, s, h);
    if (Q.f) {
      std::copy(Q.f + qo, Q.f + qo + dim, query.begin());
    } else {
      const float qscale = Q.scale[Q.qoffset(b, s, h)];
      const int32_t qzero = Q.zero[Q.qoffset(b, s, h)];
      for (int64_t d = 0; d < dim; ++d) query[d] = qscale * static_cast<float>(Q.codes[qo + d] - qzero);
    }
    const int64_t last = job.causal ? std::min(keys, job.start_pos + s + 1) : keys;
    float* dst = job.o_data + O.offset(b, s, h);
    if (job.rows != nullptr) {
      float qsum = 0;
      for (int64_t d = 0; d < dim; ++d) qsum += (query[d] *= job.factor);
      job.rows(query.data(), qsum, rows_of(K, b, g), rows_of(V, b, g), last, job.m ? job.m + s * job.m_row : nullptr,
               job.m_col, p.data(), dst);
      continue;
    }
    float qsum = 0;
    for (int64_t d = 0; d < dim; ++d) qsum += query[d];
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < last; ++j) {
      const int64_t ko = K.offset(b, j, g);
      float dot = 0;
      if (K.f) {
        const float* kr = K.f + ko;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < dim; ++d) dot += query[d] * kr[d];
      } else {  // s·(q·codes − zero·Σq): the codes are never dequantized
        const int8_t* kr = K.codes + ko;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < dim; ++d) dot += query[d] * static_cast<float>(kr[d]);
        const int64_t kq = K.qoffset(b, j, g);
        dot = K.scale[kq] * (dot - static_cast<float>(K.zero[kq]) * qsum);
      }
      p[j] = dot * job.factor + (job.m ? job.m[s * job.m_row + j * job.m_col] : 0.0f);
      top = std::max(top, p[j]);
    }
    float total = 0;
    for (int64_t j = 0; j < last; ++j) total += (p[j] = std::exp(p[j] - top));
    std::fill(acc.begin(), acc.end(), 0.0f);
    float shift = 0;  // Σ pⱼ·sⱼ·zeroⱼ of the int8 values, taken off once at the end
    for (int64_t j = 0; j < last; ++j) {
      const int64_t vo = V.offset(b, j, g);
      if (V.f) {
        const float w = p[j];
        const float* vr = V.f + vo;
        for (int64_t d = 0; d < dim; ++d) acc[d] += w * vr[d];
      } else {
        const int64_t vq = V.qoffset(b, j, g);
        const float w = p[j] * V.scale[vq];
        const int8_t* vr = V.codes + vo;
        for (int64_t d = 0; d < dim; ++d) acc[d] += w * static_cast<float>(vr[d]);
        shift += w * static_cast<float>(V.zero[vq]);
      }
    }
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < dim; ++d) dst[d] = (acc[d] - shift) * inv;
  }
}

// Attention of every (batch, query token, query head): fp32 scores over the keys it may read,
// softmax, the weighted sum of the values.
Tensor& attention(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v, int64_t start_pos,
                  const optional<Tensor>& mask, bool causal, optional<double> scale, const optional<Tensor>& qz,
                  const optional<Tensor>& qs, const optional<Tensor>& kz, const optional<Tensor>& ks, const optional<Tensor>& vz,
                  const optional<Tensor>& vs, bool seq_at_2, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, q.dim() == 4 && k.dim() == 4 && v.dim() == 4, InvalidArgument, out, "custom_sdpa: q, k, v must be 4-D");
  ET_KERNEL_CHECK_MSG(ctx, !(mask && causal), InvalidArgument, out, "custom_sdpa: attn_mask and is_causal cannot both be set");
  ET_KERNEL_CHECK_MSG(ctx, quant_params_fit(q, qz, qs) && quant_params_fit(k, kz, ks) && quant_params_fit(v, vz, vs),
                      InvalidArgument, out, "custom_sdpa: q, k, v must be fp32, or int8 with [B, S, H, 1] fp32 scales and int8 zero points");
  const int sd = seq_at_2 ? 2 : 1, hd = seq_at_2 ? 1 : 2;
  const int64_t batch = q.size(0), seq = q.size(sd), heads = q.size(hd), dim = q.size(3);
  const int64_t kv_heads = k.size(hd), rows = k.size(sd);
  ET_KERNEL_CHECK_MSG(ctx, kv_heads > 0 && heads % kv_heads == 0 && v.size(hd) == kv_heads && k.size(3) == dim &&
                      v.size(3) == dim && v.size(sd) == rows && k.size(0) == batch && v.size(0) == batch,
                      InvalidArgument, out, "custom_sdpa: q, k, v shapes do not fit grouped-query attention");
  const int64_t keys = mask ? rows : start_pos + seq;
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && keys <= rows, InvalidArgument, out,
                      "custom_sdpa: start_pos %" PRId64 " + %" PRId64 " tokens exceeds the cache's %" PRId64 " rows",
                      start_pos, seq, rows);
  const float* m = nullptr;
  int64_t m_row = 0, m_col = 0;
  if (mask) {
    ET_KERNEL_CHECK_MSG(ctx, mask->scalar_type() == ScalarType::Float && mask->dim() == 2 && mask->size(0) == seq &&
                        mask->size(1) == rows, InvalidArgument, out, "custom_sdpa: attn_mask must be fp32 [seq_len, keys]");
    m = mask->const_data_ptr<float>(), m_row = mask->strides()[0], m_col = mask->strides()[1];
  }
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok &&
                      out.scalar_type() == ScalarType::Float && contiguous(out), InvalidArgument, out,
                      "custom_sdpa: the output must be a contiguous fp32 tensor of the query's shape");
  Job job{operand(q, qz, qs, seq_at_2), operand(k, kz, ks, seq_at_2), operand(v, vz, vs, seq_at_2),
          operand(out, std::nullopt, std::nullopt, seq_at_2), out.mutable_data_ptr<float>(), m, m_row, m_col,
          scale ? static_cast<float>(*scale) : 1.0f / std::sqrt(static_cast<float>(dim)), start_pos, keys, seq, heads,
          heads / kv_heads, dim, causal, nullptr};
  const bool int8_k = k.scalar_type() == ScalarType::Char, int8_v = v.scalar_type() == ScalarType::Char;
  if (int8_k == int8_v) job.rows = rows_kernel(dim, int8_k);  // (a cache of mixed types: the scalar loop)
  executorch::extension::parallel_for(0, batch * seq * heads, 1, [&](int64_t begin, int64_t end) { attend(job, begin, end); });
  return out;
}

Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v, int64_t start_pos,
                        const optional<Tensor>& mask, double dropout_p, bool is_causal, optional<double> scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, dropout_p == 0.0, InvalidArgument, out, "custom_sdpa: dropout is not supported at inference");
  ET_KERNEL_CHECK_MSG(ctx, q.scalar_type() == ScalarType::Float && k.scalar_type() == ScalarType::Float &&
                      v.scalar_type() == ScalarType::Float, InvalidArgument, out, "custom_sdpa: q, k, v must be fp32");
  return attention(ctx, q, k, v, start_pos, mask, is_causal, scale, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                   std::nullopt, std::nullopt, false, out);
}

Tensor& custom_quantized_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v, int64_t start_pos,
                                  const optional<Tensor>& mask, double dropout_p, bool is_causal, optional<double> scale,
                                  const optional<Tensor>& qz, const optional<Tensor>& qs, const optional<Tensor>& kz,
                                  const optional<Tensor>& ks, const optional<Tensor>& vz, const optional<Tensor>& vs,
                                  bool seq_at_2, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, dropout_p == 0.0, InvalidArgument, out, "custom_quantized_sdpa: dropout is not supported at inference");
  return attention(ctx, q, k, v, start_pos, mask, is_causal, scale, qz, qs, kz, ks, vz, vs, seq_at_2, out);
}

}  // namespace

EXECUTORCH_LIBRARY(llama, "update_cache.out", update_cache_out);
EXECUTORCH_LIBRARY(llama, "update_cache_with_indices.out", update_cache_with_indices_out);
EXECUTORCH_LIBRARY(llama, "custom_sdpa.out", custom_sdpa_out);
EXECUTORCH_LIBRARY(llama, "custom_quantized_sdpa.out", custom_quantized_sdpa_out);

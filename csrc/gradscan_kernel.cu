// CUDA gradient scanner: one launch over any number of tensors (benchsuite_gradscan, every step), and the
// signature pass of gradient comparisons (benchsuite_gradscan_sig, below). Device code only, in one file that
// three compilers take unchanged: NVRTC at first use on the user's machine (benchsuite/gradscan/_cuda.py;
// no toolkit needed, and "gradscan_abi.h" is its only header), nvcc when one is found at build time (a
// fatbin shipped beside the extension), and g++ against tests/cudaemu, which runs it on the CPU.
// The host side (csrc/cuda_driver.cpp) loads it through the CUDA driver API and launches it.
//
// The caller puts a table of [address, numel, dtype, first chunk] rows in device memory (the host checks a
// copy first). The work is cut into chunks of kCudaChunkElems elements; each block owns a contiguous run
// of chunks, so it meets each tensor in at most one run: it accumulates that run in registers, reduces it
// through warp shuffles and shared memory, and one thread publishes it with one set of atomics (one per
// output field) for that tensor, into `acc` (n*6 words: counts, then stats).
//
// No separate memset per scan: the host keeps two accumulators and alternates. While a launch adds into
// one, its blocks zero the other (`zero_next`), which the previous launch on the same stream filled and
// whose copy back to the host was enqueued before this launch, so it is free.
//
// Per element, the vector loops do only what a clean gradient needs (P1): decode, one fused
// multiply-add of x*x into a float sum, one max of |x|, one zero test. NaN and Inf need no test of
// their own: they make the group's float sum NaN or Inf, and that group is then classified again from
// the registers it was loaded into (the slow path, also taken when the float sum overflowed or may
// have underflowed). Arithmetic:
//   fp32/fp16/bf16: x*x summed in float over one 16-byte group (at most 8 elements, so at most 8
//     roundings: < 5e-7 relative), each group sum added to a double. A group whose float sum is not
//     finite, or an iteration whose max |x| is below 2^-40 (squares near float's subnormal range), is
//     summed again in double, so the result matches a double accumulation within 1e-6 relative. The
//     max is taken in float (exact: it is one of the values).
//   fp64: x*x summed in double, max in double.
// Runs whose start is not 16-byte aligned (views into flat gradient buckets) take a scalar head up to
// the first aligned element, the vector body, then a scalar tail (P4).
#include "gradscan_abi.h"

// fp16 -> fp32: one conversion instruction on the GPU. Compiled as C++ (tests/cudaemu) the includer
// defines BENCHSUITE_HALF_TO_FLOAT first.
#ifndef BENCHSUITE_HALF_TO_FLOAT
__device__ __forceinline__ float benchsuite_half_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
#define BENCHSUITE_HALF_TO_FLOAT(h) benchsuite_half_to_float(h)
#endif

namespace benchsuite {
namespace {

// No <cstdint> under NVRTC: the kernel's own names for the two integer types it needs.
using i64 = long long;
using uptr = unsigned long long;
static_assert(sizeof(i64) == 8 && sizeof(uptr) == 8 && sizeof(void*) == 8, "64-bit targets only");

// Storage of the two 16-bit float types (decoded by bit operations below; no cuda_fp16.h needed).
struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

__device__ __forceinline__ double inf_d() { return __longlong_as_double(0x7ff0000000000000LL); }
__device__ __forceinline__ float inf_f() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ i64 imin(i64 a, i64 b) { return a < b ? a : b; }

constexpr int kThreads = kCudaThreads;
constexpr int kWarps = kThreads / 32;
// Blocks per multiprocessor the register budget is cut for: 5 x 256 threads fit in 48 registers with no
// spills on sm_80 and sm_90 (without the bound ptxas takes ~68, which allows only 3 blocks).
constexpr int kMinBlocks = 5;
// The signature pass holds one more float per element of its vector (up to 8): 3 blocks, 80 registers (4 blocks, 64 registers, spill inside the 2-byte loop).
constexpr int kSigMinBlocks = 3;
// 16-byte loads per thread per iteration of the unrolled loop. ptxas (CUDA 13, sm_80 and sm_90)
// issues them back to back before the arithmetic: P2's "four in flight" is what the SASS shows here
// (docs/results/cuda-static.md lists the figures).
constexpr int kUnroll = 4;
// An iteration whose largest |x| is below this has squares near float's subnormal range: in double.
constexpr float kTinyMax = 0x1p-40f;

struct Acc {
  unsigned int nan = 0, pinf = 0, ninf = 0, zero = 0;
  double ss = 0.0;
  double am = 0.0;
};

// The full classification of one value (the scalar head/tail and the slow path).
__device__ __forceinline__ void take(double v, Acc& a) {
  const double x = fabs(v);
  a.nan += (v != v);
  a.pinf += (v == inf_d());
  a.ninf += (v == -inf_d());
  a.zero += (v == 0.0);
  const double f = x < inf_d() ? x : 0.0;  // NaN fails the comparison too
  a.ss = fma(f, f, a.ss);
  a.am = fmax(a.am, f);
}

// Decoding: one element of each storage type, and the elements of one 16-byte vector.
__device__ __forceinline__ float bf16_lo(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float half_lo(unsigned int w) { return BENCHSUITE_HALF_TO_FLOAT((unsigned short)(w & 0xffffu)); }
__device__ __forceinline__ float half_hi(unsigned int w) { return BENCHSUITE_HALF_TO_FLOAT((unsigned short)(w >> 16)); }

__device__ __forceinline__ double elem(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ double elem(const double* p, i64 i) { return p[i]; }
__device__ __forceinline__ double elem(const f16* p, i64 i) { return BENCHSUITE_HALF_TO_FLOAT(p[i].bits); }
__device__ __forceinline__ double elem(const bf16* p, i64 i) { return __uint_as_float(unsigned(p[i].bits) << 16); }

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  static constexpr int kN = 4;
  __device__ static __forceinline__ float at(const uint4& u, int k) {
    return __uint_as_float(k == 0 ? u.x : k == 1 ? u.y : k == 2 ? u.z : u.w);
  }
};
template <>
struct Vec<bf16> {
  static constexpr int kN = 8;
  __device__ static __forceinline__ float at(const uint4& u, int k) {
    const unsigned int w = (k >> 1) == 0 ? u.x : (k >> 1) == 1 ? u.y : (k >> 1) == 2 ? u.z : u.w;
    return (k & 1) ? bf16_hi(w) : bf16_lo(w);
  }
};
template <>
struct Vec<f16> {
  static constexpr int kN = 8;
  __device__ static __forceinline__ float at(const uint4& u, int k) {
    const unsigned int w = (k >> 1) == 0 ? u.x : (k >> 1) == 1 ? u.y : (k >> 1) == 2 ? u.z : u.w;
    return (k & 1) ? half_hi(w) : half_lo(w);
  }
};

// The slow path for one 16-byte vector: every element classified in double. Out of line and by value,
// so the hot loop keeps its registers and never touches local memory.
struct Classified {
  unsigned int nan, pinf, ninf;
  double ss, am;
};
__device__ __forceinline__ void classify(double x, Classified& c) {
  const double f = fabs(x) < inf_d() ? fabs(x) : 0.0;  // NaN fails the comparison too
  c.nan += (x != x);
  c.pinf += (x == inf_d());
  c.ninf += (x == -inf_d());
  c.ss = fma(f, f, c.ss);
  c.am = fmax(c.am, f);
}
template <typename T>
__device__ __noinline__ Classified classify_vec(uint4 u) {
  Classified c{0, 0, 0, 0.0, 0.0};
  if constexpr (sizeof(T) == 8) {
    classify(__hiloint2double(int(u.y), int(u.x)), c);
    classify(__hiloint2double(int(u.w), int(u.z)), c);
  } else {
#pragma unroll
    for (int k = 0; k < Vec<T>::kN; ++k) classify(Vec<T>::at(u, k), c);
  }
  return c;
}
template <typename T, int kU>
__device__ __forceinline__ void classify_vecs(const uint4 (&u)[kU], Acc& a) {
#pragma unroll
  for (int j = 0; j < kU; ++j) {
    const Classified c = classify_vec<T>(u[j]);
    a.nan += c.nan, a.pinf += c.pinf, a.ninf += c.ninf;
    a.ss += c.ss;
    a.am = fmax(a.am, c.am);
  }
}

// The plain scan adds nothing else per element (its code is the same as without a sketch).
struct NoSketch {
  static constexpr bool kOn = false;
  static constexpr bool kFull = true;  // zeros and max |x| counted
  __device__ __forceinline__ void add(int, int, float) {}
};

// kU 16-byte vectors of a float-decoded type already in registers, into the accumulator (and, in the
// signature pass, each finite element into the sketch: sk.add(vector, element, value)).
// The signature pass needs the sum of squares and the non-finite counts, not the zeros or max |x|
// (Sk::kFull false): its fast path then tells a possibly underflowed sum by the sum itself (below
// kTinyMax^2 and not all zero) instead of by the max.
template <typename T, int kU>
__device__ __forceinline__ bool all_zero(const uint4 (&u)[kU]) {
  unsigned int w = 0;
#pragma unroll
  for (int j = 0; j < kU; ++j) w |= u[j].x | u[j].y | u[j].z | u[j].w;
  return (w & (sizeof(T) == 4 ? 0x7fffffffu : 0x7fff7fffu)) == 0;  // -0.0 is zero too
}

template <typename T, int kU, typename Sk = NoSketch>
__device__ __forceinline__ void take_vecs(const uint4 (&u)[kU], Acc& a, Sk& sk) {
  constexpr int kN = Vec<T>::kN;
  float s[kU];
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < kU; ++j) {
    float g = 0.0f;
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      const float x = Vec<T>::at(u[j], k);
      g = fmaf(x, x, g);        // NaN/Inf poison the group sum: checked below
      if constexpr (Sk::kFull) {
        m = fmaxf(m, fabsf(x));   // NaN is ignored by fmaxf; Inf only matters on the slow path
        a.zero += (x == 0.0f);    // NaN and Inf are not zero, so this count stays right either way
      }
    }
    s[j] = g;
  }
  float total = 0.0f;
#pragma unroll
  for (int j = 0; j < kU; ++j) total += s[j];
  if (__builtin_expect(Sk::kFull ? total < inf_f() && !(m < kTinyMax && m > 0.0f)
                                  : total < inf_f() && (total >= kTinyMax * kTinyMax || all_zero<T, kU>(u)), 1)) {
#pragma unroll
    for (int j = 0; j < kU; ++j) a.ss += double(s[j]);
    a.am = fmax(a.am, double(m));
    if constexpr (Sk::kOn) {  // every value is finite here
#pragma unroll
      for (int j = 0; j < kU; ++j)
#pragma unroll
        for (int k = 0; k < kN; ++k) sk.add(j, k, Vec<T>::at(u[j], k));
    }
  } else {  // non-finite values, an overflowed or possibly underflowed sum: again, in double
    classify_vecs<T, kU>(u, a);
    if constexpr (Sk::kOn) {
#pragma unroll
      for (int j = 0; j < kU; ++j)
#pragma unroll
        for (int k = 0; k < kN; ++k) {
          const float x = Vec<T>::at(u[j], k);
          if (fabsf(x) < inf_f()) sk.add(j, k, x);
        }
    }
  }
}

// fp64: two elements per vector, squares and sums in double.
template <typename T, int kU>
__device__ __forceinline__ void take_vecs_f64(const uint4 (&u)[kU], Acc& a) {
  double s = 0.0, m = 0.0;
#pragma unroll
  for (int j = 0; j < kU; ++j) {
    const double x0 = __hiloint2double(int(u[j].y), int(u[j].x));
    const double x1 = __hiloint2double(int(u[j].w), int(u[j].z));
    s = fma(x0, x0, s), s = fma(x1, x1, s);
    m = fmax(m, fabs(x0)), m = fmax(m, fabs(x1));
    a.zero += (x0 == 0.0), a.zero += (x1 == 0.0);
  }
  if (__builtin_expect(s < inf_d(), 1)) {
    a.ss += s;
    a.am = fmax(a.am, m);
  } else {
    classify_vecs<T, kU>(u, a);
  }
}

template <typename T, int kU>
__device__ __forceinline__ void take_vecs_any(const uint4 (&u)[kU], Acc& a) {
  if constexpr (sizeof(T) == 8) take_vecs_f64<T, kU>(u, a);
  else {
    NoSketch none;
    take_vecs<T, kU>(u, a, none);
  }
}

// Elements [e0, e1) of one tensor, this block's share, into this thread's accumulator: a scalar head
// up to the first 16-byte aligned element, the vector body, a scalar tail.
template <typename T>
__device__ void scan_run(const T* p, i64 e0, i64 e1, Acc& a) {
  constexpr i64 kVec = 16 / sizeof(T);
  const uptr addr = reinterpret_cast<uptr>(p + e0);
  const i64 head = addr % sizeof(T) != 0 ? e1 - e0  // not even element-aligned: all scalar
                                             : imin(e1 - e0, i64(((16 - (addr & 15)) & 15) / sizeof(T)));
  const i64 v0 = e0 + head;
  const i64 nvec = (e1 - v0) / kVec;
  const uint4* v = reinterpret_cast<const uint4*>(p + v0);
  for (i64 j = e0 + threadIdx.x; j < v0; j += kThreads) take(elem(p, j), a);
  i64 k = threadIdx.x;
  for (; k + (kUnroll - 1) * kThreads < nvec; k += kUnroll * kThreads) {
    uint4 u[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) u[j] = __ldg(v + k + j * kThreads);
    take_vecs_any<T, kUnroll>(u, a);
  }
  for (; k < nvec; k += kThreads) {
    const uint4 u[1] = {__ldg(v + k)};
    take_vecs_any<T, 1>(u, a);
  }
  for (i64 j = v0 + nvec * kVec + threadIdx.x; j < e1; j += kThreads) take(elem(p, j), a);
}

// ------------------------------------------------------------------------------------------------
// The signature pass (benchsuite_gradscan_sig): each tensor's signed count sketch (gradscan_abi.h defines
// it by the element index), with the sum of squares and the NaN/+Inf/-Inf counts of the same read. It
// does not count zeros or take the max |x| (a signature needs neither): that is what pays for the
// sketch, so the pass costs no more per element than the plain scan (docs/results/cuda-static.md).
// Work is taken chunk by chunk: the vector loop reads a chunk exactly as the plain scan does, so a
// thread meets the same tiles all through a chunk (its slot is fixed by its vector index modulo 256):
// its signs come from two words computed once per chunk, and its sums go to kN float registers (one per
// element position of its vector), which it adds to the block's shared buckets at the end of the chunk;
// the block adds those to the tensor's float64 buckets in global memory (K atomics per chunk). Per
// element that is one fused multiply-add with a +-1 factor, shared by the 4 elements of a group.
// Elements the vector loop cannot take (a tensor whose start is not 16-byte aligned, fp64, the last < 8
// elements) go one by one through sig_scalar, which computes sign and bucket from the index: slow,
// exact, rare.

// +1.0f when bit `bit` of w is clear, -1.0f when it is set.
__device__ __forceinline__ float sig_sign(unsigned int w, int bit) {
  return __uint_as_float(((w >> bit) << 31) | 0x3f800000u);
}

__device__ __forceinline__ unsigned int sig_bucket(i64 tile, unsigned int slot, unsigned int pos) {
  return 4u * sig_class(tile) + ((pos + slot) & 3u);
}

// One finite or non-finite element by its index (non-finite ones are left out of the sketch).
__device__ __forceinline__ void sig_scalar(i64 i, double v, float* shb) {
  if (!(fabs(v) < inf_d())) return;
  const unsigned int r = unsigned(i & (kCudaChunkElems - 1));
  const unsigned int q = r >> 2, pos = r & 3u, slot = q & 255u, m = q >> 8;
  const i64 tile = (i >> 16) * 256 + slot;
  atomicAdd(shb + sig_bucket(tile, slot, pos), sig_sign(sig_word(tile, m & 1u), int(m >> 1)) * float(v));
}

// Elements [j0, j1) one by one, this thread's share: scan and sketch.
template <typename T>
__device__ __forceinline__ void sig_scalars(const T* p, i64 j0, i64 j1, Acc& a, float* shb) {
  for (i64 j = j0 + threadIdx.x; j < j1; j += kThreads) {
    const double x = elem(p, j);
    take(x, a);
    sig_scalar(j, x, shb);
  }
}

// A thread's sketch of one chunk of a 4-byte (one group per vector) or 2-byte (two groups) type. The
// thread's vectors in the chunk are k = tid + 256 n. 4-byte: the group is the vector, slot tid, m = n:
// the sign is bit n >> 1 of word n & 1 of tile (c, tid). 2-byte: groups 2k and 2k + 1, slots
// (2 tid) & 255 and that + 1, m = 2 n + (tid >> 7): bit n of the word (tid >> 7) of each slot's tile.
// `ws0`/`ws1` hold those words shifted to the vectors at hand.
template <typename T>
struct Sketch {
  static constexpr bool kOn = true;
  static constexpr bool kFull = false;
  static constexpr int kN = Vec<T>::kN;
  float acc[kN];
  unsigned int ws0, ws1;
  __device__ __forceinline__ void add(int j, int k, float x) {
    float sg;
    if constexpr (kN == 4) sg = sig_sign((j & 1) ? ws1 : ws0, j >> 1);
    else sg = sig_sign(k < 4 ? ws0 : ws1, j);
    acc[k] = fmaf(x, sg, acc[k]);
  }
};

template <typename T>
__device__ void sig_chunk_vectors(const T* p, i64 c, i64 ce1, Acc& a, float* shb) {
  constexpr int kN = Vec<T>::kN;
  const i64 ce0 = c * kCudaChunkElems;
  const i64 nvec = (ce1 - ce0) / kN;
  const uint4* v = reinterpret_cast<const uint4*>(p + ce0);
  const unsigned int tid = threadIdx.x;
  const unsigned int slot0 = kN == 4 ? tid : (2u * tid) & 255u;
  const i64 tile0 = c * 256 + slot0;
  unsigned int w0, w1;
  if constexpr (kN == 4) w0 = sig_word(tile0, 0u), w1 = sig_word(tile0, 1u);
  else w0 = sig_word(tile0, tid >> 7), w1 = sig_word(tile0 + 1, tid >> 7);
  Sketch<T> sk;
#pragma unroll
  for (int k = 0; k < kN; ++k) sk.acc[k] = 0.0f;
  // The words are shifted as the loop goes (a loop-carried value: the compiler cannot recompute the
  // hashes inside the loop instead of keeping them, which it does with anything derived from the index).
  constexpr int kShift = kN == 4 ? kUnroll / 2 : kUnroll;  // bits of each word one iteration uses
  i64 k = tid;
  for (; k + (kUnroll - 1) * kThreads < nvec; k += kUnroll * kThreads) {
    uint4 u[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) u[j] = __ldg(v + k + j * kThreads);
    sk.ws0 = w0, sk.ws1 = w1;
    take_vecs<T, kUnroll>(u, a, sk);
    w0 >>= kShift, w1 >>= kShift;
  }
  for (int r = 0; k < nvec; k += kThreads, ++r) {  // fewer than kUnroll vectors left
    const uint4 u[1] = {__ldg(v + k)};
    if constexpr (kN == 4) sk.ws0 = ((r & 1) ? w1 : w0) >> (r >> 1);
    else sk.ws0 = w0 >> r, sk.ws1 = w1 >> r;
    take_vecs<T, 1>(u, a, sk);
  }
  sig_scalars(p, ce0 + nvec * kN, ce1, a, shb);
#pragma unroll
  for (int e = 0; e < kN; ++e) {
    const unsigned int slot = slot0 + unsigned(e >> 2);
    if (sk.acc[e] != 0.0f) atomicAdd(shb + sig_bucket(c * 256 + slot, slot, unsigned(e & 3)), sk.acc[e]);
  }
}

// The block's shared buckets into tensor t's float64 buckets, and cleared for the next chunk.
__device__ __forceinline__ void sig_publish(float* shb, double* sig, i64 t) {
  __syncthreads();
  if (threadIdx.x < kSigK) {
    const float b = shb[threadIdx.x];
    if (b != 0.0f) atomicAdd(sig + t * kSigK + threadIdx.x, double(b));
    shb[threadIdx.x] = 0.0f;
  }
  __syncthreads();
}

// Elements [e0, e1) of tensor t (e0 on a chunk boundary) with its sketch, chunk by chunk.
template <typename T>
__device__ void scan_run_sig(const T* p, i64 e0, i64 e1, Acc& a, float* shb, double* sig, i64 t) {
  const bool vectors = sizeof(T) < 8 && reinterpret_cast<uptr>(p) % 16 == 0;  // uniform across the block
  for (i64 c = e0 / kCudaChunkElems; c * kCudaChunkElems < e1; ++c) {
    const i64 ce1 = imin((c + 1) * kCudaChunkElems, e1);
    if constexpr (sizeof(T) < 8) {
      if (vectors) {
        sig_chunk_vectors(p, c, ce1, a, shb);
        sig_publish(shb, sig, t);
        continue;
      }
    }
    sig_scalars(p, c * kCudaChunkElems, ce1, a, shb);
    sig_publish(shb, sig, t);
  }
}

__device__ __forceinline__ unsigned long long warp_sum(unsigned long long x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ double warp_sum(double x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ double warp_max(double x) {
  for (int o = 16; o > 0; o >>= 1) x = fmax(x, __shfl_down_sync(0xffffffffu, x, o));
  return x;
}

struct Shared {
  unsigned long long c[4][kWarps];
  double ss[kWarps], am[kWarps];
};

// Block-wide reduction of every thread's accumulator; thread 0 publishes the run's totals.
__device__ void flush(const Acc& a, Shared& sh, i64 t, unsigned long long* counts, double* stats) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long c0 = warp_sum((unsigned long long)a.nan), c1 = warp_sum((unsigned long long)a.pinf);
  unsigned long long c2 = warp_sum((unsigned long long)a.ninf), c3 = warp_sum((unsigned long long)a.zero);
  const double ss = warp_sum(a.ss), am = warp_max(a.am);
  if (lane == 0) {
    sh.c[0][warp] = c0, sh.c[1][warp] = c1, sh.c[2][warp] = c2, sh.c[3][warp] = c3;
    sh.ss[warp] = ss, sh.am[warp] = am;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long tot[4] = {0, 0, 0, 0};
    double s = 0.0, m = 0.0;
    for (int w = 0; w < kWarps; ++w) {
      for (int f = 0; f < 4; ++f) tot[f] += sh.c[f][w];
      s += sh.ss[w];
      m = fmax(m, sh.am[w]);
    }
    unsigned long long* c = counts + t * kCountCols;
    for (int f = 0; f < 4; ++f)
      if (tot[f]) atomicAdd(c + f, tot[f]);
    if (s != 0.0) atomicAdd(stats + t * kStatCols, s);
    // Non-negative doubles order like their bit patterns, so an integer max is a float max.
    if (m != 0.0)
      atomicMax(reinterpret_cast<unsigned long long*>(stats + t * kStatCols + 1),
                (unsigned long long)__double_as_longlong(m));
  }
  __syncthreads();  // the shared slots are reused by the next run
}

template <bool kSig, typename T>
__device__ __forceinline__ void run(const T* p, i64 e0, i64 e1, Acc& a, float* shb, double* sig, i64 t) {
  if constexpr (kSig) scan_run_sig(p, e0, e1, a, shb, sig, t);
  else scan_run(p, e0, e1, a);
}

__device__ __forceinline__ i64 chunks_of(i64 numel) {
  return (numel + kCudaChunkElems - 1) / kCudaChunkElems;
}

// The blocks' share of the work: the chunks [blockIdx.x * per_block, +per_block) of the table. With
// kSig, each tensor's sketch goes to sig (n * kSigK float64, zero on entry) as well.
template <bool kSig>
__device__ __forceinline__ void scan_blocks(const i64* __restrict__ table, i64 n, i64 total_chunks, i64 per_block,
                                            unsigned long long* acc, double* sig) {
  __shared__ Shared sh;
  unsigned long long* counts = acc;
  double* stats = reinterpret_cast<double*>(acc + n * kCountCols);
  i64 c = i64(blockIdx.x) * per_block;
  const i64 c_end = imin(c + per_block, total_chunks);
  if (c >= c_end) return;
  float* shb = nullptr;
  if constexpr (kSig) {
    __shared__ float sig_shared[kSigK];
    shb = sig_shared;
    if (threadIdx.x < kSigK) shb[threadIdx.x] = 0.0f;
    __syncthreads();
  }
  // The tensor holding chunk c: the last row whose first chunk is <= c (empty tensors share their
  // first chunk with the next non-empty one and are never selected).
  i64 lo = 0, hi = n - 1;
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (table[mid * kTableCols + 3] <= c) lo = mid; else hi = mid - 1;
  }
  i64 t = lo;
  while (c < c_end && t < n) {
    const i64* row = table + t * kTableCols;
    const i64 numel = row[1], first = row[3];
    const i64 run_end = imin(c_end, first + chunks_of(numel));
    const i64 e0 = (c - first) * kCudaChunkElems;
    const i64 e1 = imin((run_end - first) * kCudaChunkElems, numel);
    Acc a;
    const void* base = reinterpret_cast<const void*>(static_cast<uptr>(row[0]));
    switch (row[2]) {  // uniform across the block: no divergence
      case kFloat32: run<kSig>(static_cast<const float*>(base), e0, e1, a, shb, sig, t); break;
      case kFloat64: run<kSig>(static_cast<const double*>(base), e0, e1, a, shb, sig, t); break;
      case kFloat16: run<kSig>(static_cast<const f16*>(base), e0, e1, a, shb, sig, t); break;
      case kBFloat16: run<kSig>(static_cast<const bf16*>(base), e0, e1, a, shb, sig, t); break;
      default: a.nan = threadIdx.x == 0;  // unknown dtype (the host check rejects it first): never "clean"
    }
    if constexpr (kSig) a.zero = 0, a.am = 0.0;  // not computed by the signature pass (see take_vecs)
    flush(a, sh, t, counts, stats);
    c = run_end;
    // Next non-empty tensor.
    do { ++t; } while (t < n && chunks_of(table[t * kTableCols + 1]) == 0);
  }
}

// Zeroing of the idle accumulator (see the top of the file), shared by both kernels.
__device__ __forceinline__ void zero_words_of(unsigned long long* zero_next, long long zero_words) {
  if (zero_next == nullptr) return;
  const long long stride = (long long)gridDim.x * kThreads;
  for (long long i = (long long)blockIdx.x * kThreads + threadIdx.x; i < zero_words; i += stride) zero_next[i] = 0ULL;
}

}  // namespace
}  // namespace benchsuite

// The scan of every step. `acc`: n*6 words, zero on entry, accumulated into. `zero_next`: `zero_words`
// words (the other accumulator) that this launch sets to zero for the next one; may be null.
extern "C" __global__ void __launch_bounds__(benchsuite::kThreads, benchsuite::kMinBlocks)
benchsuite_gradscan(const long long* __restrict__ table, long long n, long long total_chunks, long long per_block,
                    unsigned long long* acc, unsigned long long* zero_next, long long zero_words) {
  benchsuite::zero_words_of(zero_next, zero_words);
  benchsuite::scan_blocks<false>(table, n, total_chunks, per_block, acc, nullptr);
}

// Each tensor's signature into `sig` (n * kSigK float64, zero on entry, accumulated into), with its sum of
// squares and non-finite counts into `acc` as the scan gives them (zeros and max |x| left at 0).
extern "C" __global__ void __launch_bounds__(benchsuite::kThreads, benchsuite::kSigMinBlocks)
benchsuite_gradscan_sig(const long long* __restrict__ table, long long n, long long total_chunks, long long per_block,
                        unsigned long long* acc, unsigned long long* zero_next, long long zero_words, double* sig) {
  benchsuite::zero_words_of(zero_next, zero_words);
  benchsuite::scan_blocks<true>(table, n, total_chunks, per_block, acc, sig);
}

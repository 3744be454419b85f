// CUDA gradient scanner: one launch over any number of tensors.
//
// The caller puts a table of [address, numel, dtype, first chunk] rows in device memory (scan_cuda
// checks a host copy first). The work is cut into chunks of kCudaChunkElems elements; each block owns
// a contiguous run of chunks, so it meets each tensor in at most one run: it accumulates that run in
// registers, reduces it through warp shuffles and shared memory, and one thread publishes it with one
// set of atomics (one per output field) for that tensor.
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
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "gradscan.h"

// The one kernel launch goes through this macro, so the tests can run the kernel on the CPU
// (tests/cudaemu defines it before this file is compiled as C++).
#ifndef BENCHSUITE_LAUNCH
#define BENCHSUITE_LAUNCH(kernel, grid, block, shmem, stream) kernel<<<grid, block, shmem, stream>>>
#endif

namespace benchsuite {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Blocks per multiprocessor the register budget is cut for: 5 x 256 threads fit in 48 registers with no
// spills on sm_80 and sm_90 (without the bound ptxas takes ~68, which allows only 3 blocks).
constexpr int kMinBlocks = 5;
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
  a.pinf += (v == CUDART_INF);
  a.ninf += (v == -CUDART_INF);
  a.zero += (v == 0.0);
  const double f = x < CUDART_INF ? x : 0.0;  // NaN fails the comparison too
  a.ss = fma(f, f, a.ss);
  a.am = fmax(a.am, f);
}

// Decoding: one element of each storage type, and the elements of one 16-byte vector.
__device__ __forceinline__ float bf16_lo(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float half_lo(unsigned int w) {
  return __half2float(__ushort_as_half((unsigned short)(w & 0xffffu)));
}
__device__ __forceinline__ float half_hi(unsigned int w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

__device__ __forceinline__ double elem(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double elem(const double* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double elem(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ double elem(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

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
struct Vec<__nv_bfloat16> {
  static constexpr int kN = 8;
  __device__ static __forceinline__ float at(const uint4& u, int k) {
    const unsigned int w = (k >> 1) == 0 ? u.x : (k >> 1) == 1 ? u.y : (k >> 1) == 2 ? u.z : u.w;
    return (k & 1) ? bf16_hi(w) : bf16_lo(w);
  }
};
template <>
struct Vec<__half> {
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
  const double f = fabs(x) < CUDART_INF ? fabs(x) : 0.0;  // NaN fails the comparison too
  c.nan += (x != x);
  c.pinf += (x == CUDART_INF);
  c.ninf += (x == -CUDART_INF);
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

// kU 16-byte vectors of a float-decoded type already in registers, into the accumulator.
template <typename T, int kU>
__device__ __forceinline__ void take_vecs(const uint4 (&u)[kU], Acc& a) {
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
      m = fmaxf(m, fabsf(x));   // NaN is ignored by fmaxf; Inf only matters on the slow path
      a.zero += (x == 0.0f);    // NaN and Inf are not zero, so this count stays right either way
    }
    s[j] = g;
  }
  float total = 0.0f;
#pragma unroll
  for (int j = 0; j < kU; ++j) total += s[j];
  if (__builtin_expect(total < CUDART_INF_F && !(m < kTinyMax && m > 0.0f), 1)) {
#pragma unroll
    for (int j = 0; j < kU; ++j) a.ss += double(s[j]);
    a.am = fmax(a.am, double(m));
  } else {  // non-finite values, an overflowed or possibly underflowed sum: again, in double
    classify_vecs<T, kU>(u, a);
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
  if (__builtin_expect(s < CUDART_INF, 1)) {
    a.ss += s;
    a.am = fmax(a.am, m);
  } else {
    classify_vecs<T, kU>(u, a);
  }
}

template <typename T, int kU>
__device__ __forceinline__ void take_vecs_any(const uint4 (&u)[kU], Acc& a) {
  if constexpr (sizeof(T) == 8) take_vecs_f64<T, kU>(u, a);
  else take_vecs<T, kU>(u, a);
}

// Elements [e0, e1) of one tensor, this block's share, into this thread's accumulator: a scalar head
// up to the first 16-byte aligned element, the vector body, a scalar tail.
template <typename T>
__device__ void scan_run(const T* p, int64_t e0, int64_t e1, Acc& a) {
  constexpr int64_t kVec = 16 / sizeof(T);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p + e0);
  const int64_t head = addr % sizeof(T) != 0 ? e1 - e0  // not even element-aligned: all scalar
                                             : min(e1 - e0, int64_t(((16 - (addr & 15)) & 15) / sizeof(T)));
  const int64_t v0 = e0 + head;
  const int64_t nvec = (e1 - v0) / kVec;
  const uint4* v = reinterpret_cast<const uint4*>(p + v0);
  for (int64_t j = e0 + threadIdx.x; j < v0; j += kThreads) take(elem(p, j), a);
  int64_t k = threadIdx.x;
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
  for (int64_t j = v0 + nvec * kVec + threadIdx.x; j < e1; j += kThreads) take(elem(p, j), a);
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
__device__ void flush(const Acc& a, Shared& sh, int64_t t, unsigned long long* counts, double* stats) {
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

__device__ __forceinline__ int64_t chunks_of(int64_t numel) {
  return (numel + kCudaChunkElems - 1) / kCudaChunkElems;
}

__global__ void __launch_bounds__(kThreads, kMinBlocks)
scan_kernel(const int64_t* __restrict__ table, int64_t n, int64_t total_chunks, int64_t per_block,
            unsigned long long* counts, double* stats) {
  __shared__ Shared sh;
  int64_t c = int64_t(blockIdx.x) * per_block;
  const int64_t c_end = min(c + per_block, total_chunks);
  if (c >= c_end) return;
  // The tensor holding chunk c: the last row whose first chunk is <= c (empty tensors share their
  // first chunk with the next non-empty one and are never selected).
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (table[mid * kTableCols + 3] <= c) lo = mid; else hi = mid - 1;
  }
  int64_t t = lo;
  while (c < c_end && t < n) {
    const int64_t* row = table + t * kTableCols;
    const int64_t numel = row[1], first = row[3];
    const int64_t run_end = min(c_end, first + chunks_of(numel));
    const int64_t e0 = (c - first) * kCudaChunkElems;
    const int64_t e1 = min((run_end - first) * kCudaChunkElems, numel);
    Acc a;
    const void* base = reinterpret_cast<const void*>(static_cast<uintptr_t>(row[0]));
    switch (row[2]) {  // uniform across the block: no divergence
      case kFloat32: scan_run(static_cast<const float*>(base), e0, e1, a); break;
      case kFloat64: scan_run(static_cast<const double*>(base), e0, e1, a); break;
      case kFloat16: scan_run(static_cast<const __half*>(base), e0, e1, a); break;
      case kBFloat16: scan_run(static_cast<const __nv_bfloat16*>(base), e0, e1, a); break;
      default: a.nan = threadIdx.x == 0;  // unknown dtype (scan_cuda rejects it first): never "clean"
    }
    flush(a, sh, t, counts, stats);
    c = run_end;
    // Next non-empty tensor.
    do { ++t; } while (t < n && chunks_of(table[t * kTableCols + 1]) == 0);
  }
}

// Blocks that fill every multiprocessor once (one wave, so no straggler tail): the multiprocessor count
// times what the occupancy calculator says one holds of this kernel (registers, shared memory and
// threads all count). Looked up once per device: a driver query per call would cost host time.
int64_t grid_blocks(int device) {
  static std::mutex mu;
  static std::vector<int64_t> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= int(cache.size())) cache.resize(device + 1, 0);
  if (cache[device] == 0) {
    int sms = 0, per_sm = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 108;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, scan_kernel, kThreads, 0) != cudaSuccess || per_sm <= 0)
      per_sm = 4;
    cudaGetLastError();  // a failed query must not surface as the launch's error
    cache[device] = int64_t(sms) * per_sm;
  }
  return cache[device];
}

}  // namespace

std::string scan_cuda(const int64_t* host_table, const int64_t* device_table, int64_t n, int64_t total_chunks,
                      int64_t* counts, double* stats, int device, uintptr_t stream) {
  const std::string bad = check_table(host_table, n, total_chunks);
  if (!bad.empty()) return bad;
  if (n <= 0 || total_chunks <= 0) return "";
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  if (previous != device) {
    const cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return std::string("cudaSetDevice: ") + cudaGetErrorString(e);
  }
  // One wave of blocks, each with a contiguous run of chunks.
  const int64_t want = grid_blocks(device);
  const int64_t per_block = (total_chunks + want - 1) / want;
  const int64_t blocks = (total_chunks + per_block - 1) / per_block;
  BENCHSUITE_LAUNCH(scan_kernel, dim3(unsigned(blocks)), dim3(kThreads), 0, reinterpret_cast<cudaStream_t>(stream))(
      device_table, n, total_chunks, per_block, reinterpret_cast<unsigned long long*>(counts), stats);
  const cudaError_t err = cudaGetLastError();
  if (previous >= 0 && previous != device) cudaSetDevice(previous);
  if (err != cudaSuccess) return std::string("scan kernel launch: ") + cudaGetErrorString(err);
  return "";
}

int cuda_device_count(std::string* error) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (error) *error = cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return -1;
  }
  return count;
}

}  // namespace benchsuite

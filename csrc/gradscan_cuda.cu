// CUDA gradient scanner: one launch over any number of tensors.
//
// The caller puts a table of [address, numel, dtype, first chunk] rows in device memory. The work is
// cut into chunks of kCudaChunkElems elements; each block owns a contiguous run of chunks, so it meets
// each tensor in at most one run: it accumulates that run in registers, reduces it through warp
// shuffles and shared memory, and one thread publishes it with one set of atomics (one per output
// field) for that tensor. NaN/Inf handling is branch-free, so an all-NaN tensor costs what a clean one
// costs. Aligned runs are read with 16-byte loads, four in flight per thread.
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
constexpr int kUnroll = 4;

struct Acc {
  unsigned int nan = 0, pinf = 0, ninf = 0, zero = 0;
  double ss = 0.0;
  double am = 0.0;
};

__device__ __forceinline__ void take(float v, Acc& a) {
  const float x = fabsf(v);
  a.nan += (v != v);
  a.pinf += (v == CUDART_INF_F);
  a.ninf += (v == -CUDART_INF_F);
  a.zero += (v == 0.0f);
  const float f = x < CUDART_INF_F ? x : 0.0f;  // NaN fails the comparison too
  a.ss = fma(double(f), double(f), a.ss);
  a.am = fmax(a.am, double(f));
}

__device__ __forceinline__ void take(double v, Acc& a) {
  const double x = fabs(v);
  a.nan += (v != v);
  a.pinf += (v == CUDART_INF);
  a.ninf += (v == -CUDART_INF);
  a.zero += (v == 0.0);
  const double f = x < CUDART_INF ? x : 0.0;
  a.ss = fma(f, f, a.ss);
  a.am = fmax(a.am, f);
}

// One element of each storage type, read as its arithmetic value.
__device__ __forceinline__ void take_elem(const float* p, int64_t i, Acc& a) { take(p[i], a); }
__device__ __forceinline__ void take_elem(const double* p, int64_t i, Acc& a) { take(p[i], a); }
__device__ __forceinline__ void take_elem(const __half* p, int64_t i, Acc& a) { take(__half2float(p[i]), a); }
__device__ __forceinline__ void take_elem(const __nv_bfloat16* p, int64_t i, Acc& a) {
  take(__bfloat162float(p[i]), a);
}

// A 16-byte vector of each storage type.
__device__ __forceinline__ void take_vec(const float*, const uint4& u, Acc& a) {
  take(__uint_as_float(u.x), a), take(__uint_as_float(u.y), a);
  take(__uint_as_float(u.z), a), take(__uint_as_float(u.w), a);
}
__device__ __forceinline__ void take_vec(const double*, const uint4& u, Acc& a) {
  take(__hiloint2double(int(u.y), int(u.x)), a);
  take(__hiloint2double(int(u.w), int(u.z)), a);
}
__device__ __forceinline__ void take_half2(unsigned int w, Acc& a) {
  take(__half2float(__ushort_as_half((unsigned short)(w & 0xffffu))), a);
  take(__half2float(__ushort_as_half((unsigned short)(w >> 16))), a);
}
__device__ __forceinline__ void take_vec(const __half*, const uint4& u, Acc& a) {
  take_half2(u.x, a), take_half2(u.y, a), take_half2(u.z, a), take_half2(u.w, a);
}
__device__ __forceinline__ void take_bf16x2(unsigned int w, Acc& a) {
  take(__uint_as_float(w << 16), a), take(__uint_as_float(w & 0xffff0000u), a);
}
__device__ __forceinline__ void take_vec(const __nv_bfloat16*, const uint4& u, Acc& a) {
  take_bf16x2(u.x, a), take_bf16x2(u.y, a), take_bf16x2(u.z, a), take_bf16x2(u.w, a);
}

// Elements [e0, e1) of one tensor, this block's share, into this thread's accumulator.
template <typename T>
__device__ void scan_run(const T* p, int64_t e0, int64_t e1, Acc& a) {
  constexpr int kVec = 16 / sizeof(T);
  const bool aligned = (reinterpret_cast<uintptr_t>(p + e0) & 15) == 0;
  int64_t i = e0;
  if (aligned) {
    const int64_t nvec = (e1 - e0) / kVec;
    const uint4* v = reinterpret_cast<const uint4*>(p + e0);
    int64_t k = threadIdx.x;
    // Four independent 16-byte loads in flight per thread before any arithmetic.
    for (; k + (kUnroll - 1) * kThreads < nvec; k += kUnroll * kThreads) {
      uint4 u[kUnroll];
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) u[j] = __ldg(v + k + j * kThreads);
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) take_vec(p, u[j], a);
    }
    for (; k < nvec; k += kThreads) take_vec(p, __ldg(v + k), a);
    i = e0 + nvec * kVec;
  }
  for (int64_t j = i + threadIdx.x; j < e1; j += kThreads) take_elem(p, j, a);
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

__global__ void __launch_bounds__(kThreads)
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
  while (c < c_end) {
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
    }
    flush(a, sh, t, counts, stats);
    c = run_end;
    // Next non-empty tensor.
    do { ++t; } while (t < n && chunks_of(table[t * kTableCols + 1]) == 0);
  }
}

// Multiprocessor counts, looked up once per device (a driver query per call would cost host time).
int sm_count(int device) {
  static std::mutex mu;
  static std::vector<int> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= int(cache.size())) cache.resize(device + 1, 0);
  if (cache[device] == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 108;
    cache[device] = sms;
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
  // Enough blocks to fill every multiprocessor several times over, each with a contiguous run of chunks.
  const int64_t want = int64_t(sm_count(device)) * 8;
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
